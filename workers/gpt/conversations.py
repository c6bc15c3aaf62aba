"""
Conversation data for supervised fine-tuning: JSONL in the OpenAI shape, validated line by line.

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}]}

parse_jsonl() reads a whole upload and returns either every conversation or every error, never a part: an upload
with one bad line saves nothing, and the person sees all bad lines at once, each by its line number and what is
wrong with it. Blank lines are skipped (editors add them at the end); anything else must be one conversation.

render_conversation() turns a conversation into what fine-tuning trains on: token ids through the model's chat
template, and a loss mask that is 1 only on the assistant's content and its end-of-turn token (system, user and
template tokens are masked). A model without a chat template gets ChatML, whose two markers with_chatml() adds to
the tokenizer as special tokens (sft.grow_embeddings() then gives the model rows for them).

How the mask is found, for any template: the template is rendered for each prefix of the conversation, once ending
with the assistant's turn opened (add_generation_prompt=True) and once with the assistant message in it. The
characters in between are the assistant's content followed by the template's end-of-turn text; the content and the
end-of-turn token are trained on, whatever the template puts after it (ChatML's newline) is not. Each prefix must be
a prefix of the whole rendering (true of every chat template we know; one that is not is refused with a message).
The whole text is then tokenized once, each token's byte span is measured, and a token is trained on when it starts
inside a trained span; `aligned` tells whether every span boundary fell on a token boundary, i.e. whether tokenizing
the pieces separately gives the same ids as tokenizing the whole (the tests check it is so for ChatML and SmolLM2).

This module imports neither torch nor Django (the parser is the standard library only; rendering uses the torch-free
tokenizers.py and chat.py): the web process validates an upload and previews the mask with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable

from .chat import ChatTemplateError, render_chat
from .tokenizers import Tokenizer, TokenizerError

ROLES = ("system", "user", "assistant")

MAX_LINE_BYTES = 1 << 20  # one conversation: 1 MiB of JSON is already far more than any context we train on
MAX_MESSAGES = 512
MAX_ERRORS = 100  # an upload in the wrong format would otherwise list every one of its lines


class ConversationError(ValueError):
    """Conversation data is invalid. `errors` lists the problems as LineError, in line order."""

    def __init__(self, errors: list[LineError], *, truncated: bool = False):
        self.errors = errors
        self.truncated = truncated
        shown = "; ".join(str(e) for e in errors[:5])
        more = len(errors) - 5
        super().__init__(f"{len(errors)}{'+' if truncated else ''} bad line(s): {shown}"
                         + (f"; and {more} more" if more > 0 else "")
                         + ". Each line must be one JSON object {\"messages\": [{\"role\": ..., \"content\": ...}]}; "
                           "fix these lines and upload the file again")


@dataclass(frozen=True)
class LineError:
    line: int  # 1-based, as an editor shows it
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def check_conversation(obj) -> list[dict]:
    """The messages of one parsed conversation as [{"role", "content"}], or ValueError saying what is wrong.

    Roles are system, user or assistant; content is a string; at least one assistant message, since fine-tuning
    learns only from what the assistant says and a conversation without it would teach nothing."""
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object with a \"messages\" list, got {_json_type(obj)}")
    if "messages" not in obj:
        keys = ", ".join(repr(k) for k in list(obj)[:5]) or "none"
        raise ValueError(f"no \"messages\" key (keys: {keys})")
    messages = obj["messages"]
    if not isinstance(messages, list):
        raise ValueError(f"\"messages\" must be a list, got {_json_type(messages)}")
    if not messages:
        raise ValueError("\"messages\" is empty")
    if len(messages) > MAX_MESSAGES:
        raise ValueError(f"{len(messages)} messages, at most {MAX_MESSAGES} are allowed")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i} must be an object {{\"role\", \"content\"}}, got {_json_type(m)}")
        role = m.get("role")
        if role not in ROLES:
            raise ValueError(f"message {i} has role {role!r}: use one of {', '.join(ROLES)}")
        content = m.get("content")
        if not isinstance(content, str):
            raise ValueError(f"message {i} ({role}) has content of type {_json_type(content)}: it must be a string")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("no assistant message: fine-tuning learns only from assistant turns, add at least one")
    return out


def parse_jsonl(data: bytes | str, *, max_line_bytes: int = MAX_LINE_BYTES) -> list[list[dict]]:
    """Every conversation of a JSONL upload, as lists of messages; ConversationError listing every bad line if any
    line is bad (up to MAX_ERRORS of them), so nothing is ever half-read."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogatepass")
    conversations: list[list[dict]] = []
    errors: list[LineError] = []
    truncated = False
    for number, raw in enumerate(data.split(b"\n"), start=1):
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            conversations.append(parse_line(raw, max_line_bytes=max_line_bytes))
        except ValueError as e:
            if len(errors) == MAX_ERRORS:
                truncated = True
                break
            errors.append(LineError(number, str(e)))
    if errors:
        raise ConversationError(errors, truncated=truncated)
    if not conversations:
        raise ConversationError([LineError(1, "the file holds no conversations")])
    return conversations


def parse_line(raw: bytes, *, max_line_bytes: int = MAX_LINE_BYTES) -> list[dict]:
    """One JSONL line (bytes, no newline) to its messages; ValueError with what is wrong."""
    if len(raw) > max_line_bytes:
        raise ValueError(f"the line is {len(raw):,} bytes, more than the {max_line_bytes:,} allowed for one "
                         f"conversation: split it into shorter conversations")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"not valid UTF-8 (byte {e.start} of the line): save the file as UTF-8") from None
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark that some editors put at the start of the file
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    messages = check_conversation(obj)
    for i, m in enumerate(messages):
        try:
            m["content"].encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"message {i} contains a lone surrogate escape (\\ud8..): it is not valid text") from None
    return messages


def read_jsonl(path) -> list[list[dict]]:
    """parse_jsonl of a file on disk."""
    with open(path, "rb") as f:
        return parse_jsonl(f.read())


def dump_jsonl(conversations: list[list[dict]]) -> str:
    """The JSONL text of conversations (one {"messages": [...]} per line), as parse_jsonl reads it back."""
    return "".join(json.dumps({"messages": c}, ensure_ascii=False) + "\n" for c in conversations)


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


# ----------------------------------------------------------------------------------------------------------------------
# Rendering through a chat template, with the loss mask

IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# ChatML (OpenAI's, used by Qwen and SmolLM2), without a default system message: what a model without a chat template
# gets. The same Jinja layout as SmolLM2's template.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatMLTokenizer(Tokenizer):
    """A tokenizer with ChatML's <|im_start|> and <|im_end|> added as special tokens, with the ids right after the
    base tokenizer's (base.n_vocab, base.n_vocab + 1). Everything else is the base tokenizer's: ids below
    base.n_vocab mean what they meant, so a model keeps every embedding row it learned."""

    def __init__(self, base: Tokenizer):
        self.base = base
        self.name = f"{base.name}+chatml"
        self.kind = base.kind
        self.added = {IM_START: base.n_vocab, IM_END: base.n_vocab + 1}  # text -> id
        self.n_vocab = base.n_vocab + len(self.added)
        self.special_tokens = {**base.special_tokens, **self.added}
        self._by_id = {i: s for s, i in self.added.items()}

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        if not allow_special:
            return self.base.encode(text)
        ids: list[int] = []
        for i, piece in enumerate(_split_keep(text, tuple(self.added))):
            if i % 2:
                ids.append(self.added[piece])
            elif piece:
                ids.extend(self.base.encode(piece, allow_special=True))
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        out, run = [], []
        for i in ids:
            if i in self._by_id:
                out.append(self.base.decode_bytes(run))
                out.append(self._by_id[i].encode("utf-8"))
                run = []
            else:
                run.append(i)
        out.append(self.base.decode_bytes(run))
        return b"".join(out)

    def decode(self, ids: Iterable[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._by_id:
            return self._by_id[token_id].encode("utf-8")
        return self.base.token_bytes(token_id)


def _split_keep(text: str, markers: tuple[str, ...]) -> list[str]:
    """text split at every marker, markers kept at the odd positions: "a<m>b" -> ["a", "<m>", "b"]."""
    out, start, i = [], 0, 0
    while i < len(text):
        hit = next((m for m in markers if text.startswith(m, i)), None)
        if hit is None:
            i += 1
            continue
        out += [text[start:i], hit]
        i = start = i + len(hit)
    out.append(text[start:])
    return out


def with_chatml(tokenizer: Tokenizer) -> Tokenizer:
    """The tokenizer itself when it already has both ChatML markers as special tokens (SmolLM2), else a
    ChatMLTokenizer adding them."""
    if IM_START in tokenizer.special_tokens and IM_END in tokenizer.special_tokens:
        return tokenizer
    return ChatMLTokenizer(tokenizer)


def chat_format(tokenizer: Tokenizer, chat_template: str | None) -> tuple[Tokenizer, str, str]:
    """(tokenizer, template, end-of-turn text) to fine-tune with: the model's own template when it has one, else
    ChatML with its markers added to the tokenizer. The end-of-turn text is <|im_end|> for ChatML-style templates,
    else the tokenizer's end-of-sequence token."""
    if not chat_template:
        return with_chatml(tokenizer), CHATML_TEMPLATE, IM_END
    if IM_END in chat_template:
        return tokenizer, chat_template, IM_END
    eos_id = getattr(tokenizer, "eos_id", None)
    eos = {i: s for s, i in tokenizer.special_tokens.items()}.get(eos_id)
    if eos is None:
        raise ChatTemplateError("the chat template does not use <|im_end|> and the tokenizer has no end-of-sequence "
                                "token: cannot tell where an assistant turn ends; fine-tune it without its template "
                                "(ChatML is then added)")
    return tokenizer, chat_template, eos


@dataclass
class Rendered:
    """A conversation ready to train on: ids and a mask of the same length, 1 = trained on."""
    ids: list[int]
    mask: list[int]
    text: str
    aligned: bool  # every trained span starts and ends on a token boundary (see the module docstring)
    spans: list[tuple[int, int]] = field(default_factory=list)  # trained character spans of text

    @property
    def n_trained(self) -> int:
        return sum(self.mask)


def render_conversation(messages: list[dict], tokenizer: Tokenizer, template: str, end_of_turn: str, *,
                        bos_token: str = "", eos_token: str = "") -> Rendered:
    """Token ids and loss mask of one conversation (see the module docstring for how the mask is found).

    Raises ChatTemplateError when the template does not render prefixes as prefixes, and TokenizerError when the
    tokenizer cannot encode the text losslessly (a character outside a char vocabulary, a byte the vocabulary
    lacks)."""
    def render(msgs, gen):
        return render_chat(template, msgs, add_generation_prompt=gen, bos_token=bos_token, eos_token=eos_token)

    text = render(messages, False)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        opened = render(messages[:i], True) if i else _opened_empty(render, m)
        closed = render(messages[:i + 1], False)
        if not (text.startswith(opened) and text.startswith(closed) and closed.startswith(opened)):
            raise ChatTemplateError(
                f"the chat template does not render message {i} after the messages before it (a prefix of the "
                f"conversation is not a prefix of its rendering), so the assistant's tokens cannot be located")
        start = len(opened)
        end = start + len(m["content"])
        if text[start:end] != m["content"]:
            raise ChatTemplateError(f"the chat template changes the content of message {i} (e.g. strips it): the "
                                    f"assistant's tokens cannot be located")
        if not text.startswith(end_of_turn, end) or end + len(end_of_turn) > len(closed):
            raise ChatTemplateError(f"the chat template does not end assistant message {i} with {end_of_turn!r}")
        spans.append((start, end + len(end_of_turn)))

    ids = tokenizer.encode(text, allow_special=True)
    offsets, pos = [], 0  # byte offset where each token starts
    for t in ids:
        offsets.append(pos)
        pos += len(tokenizer.token_bytes(t))
    data = text.encode("utf-8")
    if pos != len(data):
        raise TokenizerError(f"the tokenizer {tokenizer.name!r} does not encode this conversation losslessly "
                             f"({pos} bytes of tokens for {len(data)} bytes of text): it lacks some of its bytes")
    byte_spans = [(len(text[:a].encode("utf-8")), len(text[:b].encode("utf-8"))) for a, b in spans]
    mask = [int(any(a <= o < b for a, b in byte_spans)) for o in offsets]
    starts = set(offsets) | {len(data)}
    aligned = all(a in starts and b in starts for a, b in byte_spans)
    return Rendered(ids=ids, mask=mask, text=text, aligned=aligned, spans=spans)


def _opened_empty(render, message) -> str:
    """The text before the first message's content when the conversation starts with the assistant (rare):
    render it alone and cut at its content."""
    full = render([message], False)
    at = full.find(message["content"]) if message["content"] else None
    if at is None or at < 0:
        raise ChatTemplateError("a conversation that starts with an empty assistant message cannot be located")
    return full[:at]
