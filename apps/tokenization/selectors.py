"""Reads: which tokenizers a user may use, a tokenizer's runtime object, and the pages' computed views."""

from __future__ import annotations

import functools

from django.conf import settings
from django.db.models import Case, QuerySet, When

from apps.system import files
from apps.system.models import JobStatus
from apps.tokenization import playground
from apps.tokenization.models import Tokenizer
from workers.gpt import tokenizers as toklib


class TokenizationError(ValueError):
    """Input the tokenization pages and API refuse; the message says why and what to do. status: HTTP status."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


class TokenizerNotFound(TokenizationError):
    pass


def tokenizer_list(*, user, ready_only: bool = False) -> QuerySet[Tokenizer]:
    """Built-in encodings first (oldest to newest), then character-level ones, then trained BPEs."""
    kind_order = Case(When(kind=Tokenizer.Kind.TIKTOKEN, then=0), When(kind=Tokenizer.Kind.CHAR, then=1), default=2)
    qs = (Tokenizer.objects.visible_to(user).select_related("corpus", "owner")
          .alias(kind_order=kind_order).order_by("kind_order", "n_vocab", "name"))
    return qs.ready() if ready_only else qs


def tokenizer_names(*, user) -> list[str]:
    return list(tokenizer_list(user=user, ready_only=True).values_list("name", flat=True))


def tokenizer_get(*, name: str, user) -> Tokenizer:
    """A tokenizer the user may see, by name; TokenizerNotFound (listing the choices) otherwise."""
    try:
        return Tokenizer.objects.visible_to(user).get(name=name)
    except Tokenizer.DoesNotExist:
        choices = ", ".join(tokenizer_names(user=user))
        raise TokenizerNotFound(f"unknown tokenizer {str(name)[:80]!r}: choose one of {choices}",
                                status=400) from None


def tokenizer_usable(*, name: str, user) -> tuple[Tokenizer, toklib.Tokenizer]:
    """The row and the runtime tokenizer, for one that has finished training."""
    row = tokenizer_get(name=name, user=user)
    if row.status != JobStatus.SUCCEEDED:
        if row.status in JobStatus.active():
            raise TokenizationError(f"tokenizer {row.name!r} is still training ({row.progress:.0%}); try again when "
                                    f"it has finished", status=409)
        raise TokenizationError(f"tokenizer {row.name!r} did not finish training ({row.status}): "
                                f"{row.error or 'no tokenizer was saved'}", status=409)
    try:
        return row, tokenizer_runtime(tokenizer=row)
    except toklib.TokenizerError as exc:  # its files are missing or damaged
        raise TokenizationError(f"tokenizer {row.name!r} cannot be loaded: {exc}", status=409) from None


def tokenizer_runtime(*, tokenizer: Tokenizer) -> toklib.Tokenizer:
    """Load the tokenizer a row describes (cached per process; built-in encodings load once)."""
    return _load(tokenizer.kind, tokenizer.name, tokenizer.path, tokenizer.fingerprint)


def tokenizer_from_spec(*, spec: dict) -> toklib.Tokenizer:
    """The runtime tokenizer a spec names ({"kind", "name", "path", "fingerprint"}, as a row has them and a model or
    checkpoint records them), even when its row has been deleted since (cached like tokenizer_runtime)."""
    tokenizer = _load(spec["kind"], spec["name"], spec.get("path", ""), spec.get("fingerprint", ""))
    if spec.get("chatml"):  # a fine-tuned model's: ChatML's two markers added after the base ids (deterministic)
        from workers.gpt.conversations import with_chatml

        return with_chatml(tokenizer)
    return tokenizer


@functools.lru_cache(maxsize=32)
def _load(kind: str, name: str, path: str, fingerprint: str) -> toklib.Tokenizer:
    if kind == Tokenizer.Kind.TIKTOKEN:
        return toklib.get_builtin(name)
    full = files.artifact_path(path)
    if kind == Tokenizer.Kind.CHAR:
        try:
            return toklib.CharTokenizer.from_json(full.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise toklib.TokenizerDataError(f"the file of tokenizer {name!r} is missing ({full}); rebuild it from "
                                            f"its corpus") from None
    if kind == Tokenizer.Kind.BPE:
        return toklib.load_bpe(full)
    if kind == Tokenizer.Kind.IMPORTED:
        return toklib.load_imported(full)
    raise toklib.TokenizerError(f"unknown tokenizer kind {kind!r}")


def tokenizer_view(tokenizer: Tokenizer) -> dict:
    """The job state a page shows and an event carries (JSON-safe, small)."""
    target = max(0, (tokenizer.vocab_size or 0) - 256 - len(tokenizer.special_tokens or []))
    return {
        "percent": round(100 * tokenizer.progress, 1),
        "merges_total": target,
        "merges_done": round(tokenizer.progress * target),
        "id": tokenizer.id,
        "name": tokenizer.name,
        "kind": tokenizer.kind,
        "status": tokenizer.status,
        "progress": tokenizer.progress,
        "rate": tokenizer.rate,
        "eta_seconds": tokenizer.eta_seconds,
        "phase": tokenizer.phase,
        "error": tokenizer.error,
        "n_vocab": tokenizer.n_vocab,
        "n_merges": tokenizer.n_merges,
        "vocab_size": tokenizer.vocab_size,
        "train_seconds": tokenizer.train_seconds,
        "owner_id": tokenizer.owner_id,
        "active": tokenizer.status in JobStatus.active(),
    }


def tokenizer_may_control(*, tokenizer: Tokenizer, user) -> bool:
    """Cancel or delete: the owner of a trained tokenizer, or staff; built-in ones are nobody's to delete."""
    if tokenizer.builtin or not user.is_authenticated:
        return False
    return user.is_staff or tokenizer.owner_id == user.id


def tokenizer_choices(*, user) -> list[tuple[str, list[Tokenizer]]]:
    """Ready tokenizers grouped for a <select>: built-in, from imported models, character-level, trained BPEs."""
    groups: dict[str, list[Tokenizer]] = {
        Tokenizer.Kind.TIKTOKEN: [], Tokenizer.Kind.IMPORTED: [], Tokenizer.Kind.CHAR: [], Tokenizer.Kind.BPE: []
    }
    for t in tokenizer_list(user=user, ready_only=True):
        groups.setdefault(t.kind, []).append(t)
    labels = {Tokenizer.Kind.TIKTOKEN: "Built in (OpenAI, via tiktoken)", Tokenizer.Kind.CHAR: "Character-level",
              Tokenizer.Kind.BPE: "Trained here (byte-level BPE)",
              Tokenizer.Kind.IMPORTED: "From imported models (e.g. SmolLM2)"}
    return [(labels[k], v) for k, v in groups.items() if v]


# ----------------------------------------------------------------------------------------------------------------------
# The playground


def text_check(*, text: str) -> None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > settings.TOKENIZE_MAX_BYTES:
        raise TokenizationError(
            f"The text is {_mb(size)}; the playground and the API take at most {_mb(settings.TOKENIZE_MAX_BYTES)} "
            f"at a time. Upload longer text as a corpus on the Data page and encode it there.", status=413)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def playground_panes(*, text: str, names: list[str], user, allow_special: bool, show_ws: bool) -> dict:
    """Every pane of the playground for this text: stats, the first window of segments, errors per pane."""
    text_check(text=text)
    panes = []
    for index, name in enumerate(names):
        pane = {"index": index, "name": name, "error": None, "ids": None}
        try:
            row, tok = tokenizer_usable(name=name, user=user)
            pane |= {"row": row, "tok": tok, "n_vocab": tok.n_vocab}
            ids = playground.encode(tok, text, allow_special)
        except (TokenizationError, toklib.TokenizerError) as exc:
            pane["error"] = str(exc)
            panes.append(pane)
            continue
        window = playground.segments_window(tok, ids, 0, 0, playground.FIRST_WINDOW, show_ws=show_ws)
        pane |= {"ids": ids, "stats": playground.pane_stats(text, len(ids)), "window": window,
                 "specials_in_text": playground.find_special_strings(tok, text)}
        panes.append(pane)
    ok = [p for p in panes if p["ids"] is not None]
    if len(ok) >= 2:
        fewest = min(p["stats"]["tokens"] for p in ok)
        for p in ok:
            p["relative"] = p["stats"]["tokens"] / fewest if fewest else None
            p["best"] = p["stats"]["tokens"] == fewest
    specials = next(([s | {"tokenizer": p["name"]} for s in p["specials_in_text"]] for p in ok
                     if p["specials_in_text"]), [])
    return {"panes": panes, "insights": playground.insights(text, ok), "specials_in_text": specials}


def playground_window(*, text: str, name: str, user, allow_special: bool, show_ws: bool, start: int,
                      seg_start: int) -> dict:
    """The next lazily loaded window of one pane."""
    text_check(text=text)
    _, tok = tokenizer_usable(name=name, user=user)
    ids = playground.encode(tok, text, allow_special)
    if not 0 <= start <= len(ids):
        raise TokenizationError(f"start {start} is outside the {len(ids)} tokens of this text")
    return playground.segments_window(tok, ids, start, seg_start, playground.MORE_WINDOW, show_ws=show_ws)
