"""Conversation sets, the Data page's second kind: JSONL in the OpenAI messages shape, for supervised fine-tuning.

A conversation set is a Corpus row of kind "conversations" whose file (ARTIFACTS_DIR/corpora/<sha256>.jsonl) holds
the training conversations first and the validation ones after them, one per line; stats["n_train"] says where the
validation part starts, so the split is at conversation granularity and never cuts one in two. An upload is checked
whole by workers.gpt.conversations.parse_jsonl before anything is written: one bad line saves nothing, and the message
names every bad line by its number.

The preview renders a conversation through a model's chat template (ChatML when the model has none) and marks every
token trained on or masked: the loss mask fine-tuning uses, made visible. Both need no torch.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.utils.translation import gettext as _

from apps.corpora.models import Corpus
from apps.corpora.text import CorpusInputError
from apps.system import files
from workers.gpt import conversations as convlib
from workers.gpt.chat import ChatTemplateError
from workers.gpt.tokenizers import TokenizerError

BUNDLED_DIR = Path(settings.BASE_DIR) / "data" / "conversations"
BUNDLED = [
    {"dir": "char", "name": "Conversations (char-safe)",
     "description": "3,000 + 300 short conversations built from the bundled corpora: who speaks a Shakespeare line, "
                    "continue a speech, shout a line, sums in words, \"who are you\" answers. Only the 63 characters "
                    "of shakespeare.txt, so the Shakespeare character-level model can be fine-tuned on it. MIT; the "
                    "Shakespeare lines are public domain."},
    {"dir": "general", "name": "Conversations (general)",
     "description": "4,500 + 450 conversations: everything of the char-safe set, plus sums in digits and questions "
                    "on Song ci poems in Chinese. For byte-level BPE models (GPT-2 encodings, SmolLM2). MIT; the "
                    "texts are public domain."},
]
PREVIEW_MAX_TOKENS = 2000  # a preview colours one conversation, not a book


def conversations_create(*, name: str, data: bytes, description: str = "", owner=None, builtin: bool = False,
                         val_fraction: float = 0.1, n_val: int | None = None) -> Corpus:
    """A conversation set from JSONL bytes; CorpusInputError (nothing written) for a file that is too large, or any
    bad line (all of them named). The last n_val conversations (default: val_fraction of them, at least one when
    there are two or more) are held out for validation."""
    name = (name or "").strip()
    if not name:
        raise CorpusInputError(_("Give the conversation set a name."))
    limit = settings.CORPUS_MAX_BYTES
    if len(data) > limit:
        raise CorpusInputError(_("The file is %(size).1f MB, over the limit of %(limit).1f MB for a data set: upload "
                                 "fewer conversations.") % {"size": len(data) / 2**20, "limit": limit / 2**20},
                               status=413)
    try:
        convs = convlib.parse_jsonl(data)
    except convlib.ConversationError as exc:
        error = CorpusInputError(_("%(n)s%(more)s bad line(s): nothing was saved. Each line must be one JSON object "
                                   "{\"messages\": [{\"role\": ..., \"content\": ...}]}; fix these lines and upload "
                                   "the file again.") % {"n": len(exc.errors), "more": "+" if exc.truncated else ""})
        error.lines = [str(e) for e in exc.errors]
        raise error from None
    if n_val is None:
        n_val = min(len(convs) - 1, max(1 if len(convs) > 1 else 0, round(len(convs) * val_fraction)))
    text = convlib.dump_jsonl(convs)  # one canonical line per conversation: the line numbers are the indices
    return Corpus.objects.create_with_file(
        text.encode("utf-8"), suffix=".jsonl", name=name[:100], kind=Corpus.Kind.CONVERSATIONS,
        description=description.strip(), owner=owner, builtin=builtin, n_chars=len(text), n_lines=len(convs),
        stats=conversation_stats(convs, n_val=n_val), val_fraction=n_val / len(convs))


def conversation_stats(convs: list[list[dict]], *, n_val: int) -> dict:
    """What the Data page shows of a set: conversations, turns, the split, how many have a system message."""
    roles = {role: sum(1 for c in convs for m in c if m["role"] == role) for role in convlib.ROLES}
    chars = sorted({ch for c in convs for m in c for ch in m["content"]})
    return {"n_conversations": len(convs), "n_train": len(convs) - n_val, "n_val": n_val,
            "n_messages": sum(len(c) for c in convs), "n_turns": roles["assistant"], "roles": roles,
            "with_system": sum(1 for c in convs if c and c[0]["role"] == "system"),
            "n_distinct_chars": len(chars),
            "mean_chars": round(sum(len(m["content"]) for c in convs for m in c) / len(convs), 1)}


def conversations_seed_defaults() -> list[Corpus]:
    """The bundled conversation sets, created once (idempotent, like corpus_seed_defaults); a bundled set whose file
    went missing gets it back."""
    seeded = []
    for spec in BUNDLED:
        train = (BUNDLED_DIR / spec["dir"] / "train.jsonl").read_bytes()
        val = (BUNDLED_DIR / spec["dir"] / "val.jsonl").read_bytes()
        existing = Corpus.objects.filter(builtin=True, kind=Corpus.Kind.CONVERSATIONS, name=spec["name"]).first()
        if existing is not None and existing.file.exists():
            seeded.append(existing)
            continue
        n_val = len(convlib.parse_jsonl(val))
        if existing is not None:
            files.write_atomic(existing.file, convlib.dump_jsonl(convlib.parse_jsonl(train + b"\n" + val))
                               .encode("utf-8"))
            seeded.append(existing)
            continue
        seeded.append(conversations_create(name=spec["name"], description=spec["description"], builtin=True,
                                           data=train + b"\n" + val, n_val=n_val))
    return seeded


def conversations_load(*, corpus: Corpus) -> tuple[list[list[dict]], list[list[dict]]]:
    """(train, val) conversations of a conversation set."""
    if corpus.kind != Corpus.Kind.CONVERSATIONS:
        raise CorpusInputError(_("%(name)s is a %(kind)s data set, not conversations: pick a conversation set.")
                               % {"name": corpus.name, "kind": corpus.get_kind_display()})
    if not corpus.file.exists():
        raise CorpusInputError(_("The file of %(name)s is missing (%(path)s): upload the set again.")
                               % {"name": corpus.name, "path": corpus.file}, status=409)
    convs = convlib.read_jsonl(corpus.file)
    n_train = corpus.stats.get("n_train", len(convs))
    return convs[:n_train], convs[n_train:]


def conversation_get(*, corpus: Corpus, index: int) -> list[dict]:
    """The index-th conversation of the set (0-based, train then val); CorpusInputError past the end."""
    n = corpus.stats.get("n_conversations", 0)
    if not 0 <= index < n:
        raise CorpusInputError(_("There is no conversation %(index)s: the set has %(n)s (0 to %(last)s).")
                               % {"index": index, "n": n, "last": n - 1}, status=404)
    with open(corpus.file, "rb") as f:
        for i, line in enumerate(f):
            if i == index:
                return convlib.parse_line(line.rstrip(b"\r\n"))
    raise CorpusInputError(_("The file of %(name)s is shorter than its statistics say: upload it again.")
                           % {"name": corpus.name}, status=409)


def conversation_format(*, tokenizer, chat_template: str):
    """(tokenizer, template, end-of-turn text) a model is fine-tuned with: its own template, or ChatML added."""
    return convlib.chat_format(tokenizer, chat_template or None)


def conversation_preview(*, messages: list[dict], tokenizer, chat_template: str) -> dict:
    """The conversation rendered through the chat template (ChatML when there is none), as tokens each marked
    trained-on or masked; CorpusInputError when the tokenizer cannot encode it or the template cannot be used."""
    try:
        tok, template, eot = conversation_format(tokenizer=tokenizer, chat_template=chat_template)
        rendered = convlib.render_conversation(messages, tok, template, eot)
    except (ChatTemplateError, TokenizerError, ValueError) as exc:
        raise CorpusInputError(_("This model cannot render the conversation: %(why)s") % {"why": exc}) from None
    tokens = []
    for token_id, trained in zip(rendered.ids[:PREVIEW_MAX_TOKENS], rendered.mask):
        tokens.append({"id": token_id, "text": tok.token_bytes(token_id).decode("utf-8", errors="replace"),
                       "trained": bool(trained), "special": token_id in tok.special_tokens.values()})
    return {"tokens": tokens, "n_tokens": len(rendered.ids), "n_trained": rendered.n_trained,
            "truncated": len(rendered.ids) > PREVIEW_MAX_TOKENS, "template_is_chatml": not chat_template,
            "end_of_turn": eot, "aligned": rendered.aligned}


def conversations_missing_chars(*, convs: list[list[dict]], tokenizer) -> str | None:
    """For a character-level tokenizer, the characters of the conversations it has no id for (as one string, most
    frequent first, at most 40), else None. Byte-level tokenizers encode any text."""
    vocab = getattr(tokenizer, "stoi", None)
    if vocab is None:
        return None
    counts: dict[str, int] = {}
    for c in convs:
        for m in c:
            for ch in m["content"]:
                if ch not in vocab:
                    counts[ch] = counts.get(ch, 0) + 1
    if not counts:
        return None
    return "".join(sorted(counts, key=lambda ch: -counts[ch])[:40])
