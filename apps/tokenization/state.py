"""The playground's state as it travels in a URL or a form: tokenizers, text (compressed when long), options.

    ?t=gpt2&t=o200k_base&text=hello            short text as it is
    ?t=gpt2&z=<base64url of raw DEFLATE>       long text, compressed by the browser's CompressionStream("deflate-raw")
    &add=cl100k_base appends a pane (the "compare with" select)
    &ws=1 show whitespace   &special=1 special-token text is special   &ids=1 ids under the tokens
"""

from __future__ import annotations

import base64
import binascii
import zlib
from dataclasses import dataclass, field

from django.conf import settings

from apps.tokenization.selectors import TokenizationError

DEFAULT_TOKENIZERS = ["gpt2", "o200k_base"]
MAX_PANES = 6
SAMPLE_TEXT = (
    "Tokenization turns text into the integers a language model actually sees.\n"
    "Hello world! Counting the r's in \"strawberry\" is hard when you see tokens, not letters.\n"
    "Numbers split oddly: 1234567 + 2024 = 1236591.\n"
    "def greet(name):\n    return f\"Hello, {name}!\"\n"
    "中文也会被切分成词元。 Emoji too: 🦙🚀\n"
    "<|endoftext|>"
)


@dataclass
class PlaygroundState:
    text: str = SAMPLE_TEXT
    tokenizers: list[str] = field(default_factory=lambda: list(DEFAULT_TOKENIZERS))
    show_ws: bool = False
    allow_special: bool = False
    show_ids: bool = False
    link_error: str = ""


def state_from(params) -> PlaygroundState:
    """Read the state from a QueryDict (GET query or POST form). Raises TokenizationError for text over the limit
    or a broken compressed link."""
    if not params:
        return PlaygroundState()
    state = PlaygroundState(tokenizers=[])
    names = [n.strip() for n in params.getlist("t") if n.strip()]
    if added := params.get("add", "").strip():  # the "compare with…" select
        names.append(added)
    drop = params.get("drop")
    if drop is not None and drop.isdigit() and int(drop) < len(names):
        del names[int(drop)]
    state.tokenizers = list(dict.fromkeys(names))[:MAX_PANES]
    if params.get("z"):
        state.text = decompress_text(params["z"])
    else:
        state.text = params.get("text", SAMPLE_TEXT)  # "?t=gpt2" alone shows the sample text
    state.show_ws = params.get("ws") == "1"
    state.allow_special = params.get("special") == "1"
    state.show_ids = params.get("ids") == "1"
    return state


def decompress_text(z: str) -> str:
    limit = settings.TOKENIZE_MAX_BYTES
    try:
        data = base64.urlsafe_b64decode(z + "=" * (-len(z) % 4))
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        raw = inflater.decompress(data, limit + 1)
    except (binascii.Error, ValueError, zlib.error):
        raise TokenizationError("The text in this link is damaged (it does not decompress): the link was probably "
                                "cut short when it was copied.") from None
    if len(raw) > limit or inflater.unconsumed_tail:
        raise TokenizationError(f"The text in this link is over the playground's limit of {limit:,} bytes.",
                                status=413)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TokenizationError("The text in this link is not valid UTF-8: the link is damaged.") from None


def compress_text(text: str) -> str:
    """What the browser does, for tests and server-made links."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    data = compressor.compress(text.encode("utf-8")) + compressor.flush()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
