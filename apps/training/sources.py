"""The data a run trains on, as the corpora and tokenization apps provide it: the only module of this app that knows
their API (corpora: Corpus, shards_ensure, shards_files; tokenization: Tokenizer, tokenizer_runtime), so a change
there is a change here.
"""

import math
from dataclasses import dataclass

from django.db.models import Avg

from apps.corpora import selectors as corpora_selectors
from apps.corpora import services as corpora_services
from apps.corpora.models import Corpus, Shards
from apps.system.models import JobStatus
from apps.tokenization import selectors as tokenization_selectors
from apps.tokenization.models import Tokenizer
from apps.training.presets import padded_vocab_size
from workers.gpt.config import missing_chars_error

# Tokens per character when no encoding of the pair exists yet: English under a GPT-2-like BPE is ~4 characters per
# token. Only estimates use it; the worker checks the real counts before training.
DEFAULT_TOKENS_PER_CHAR = 0.27


@dataclass(frozen=True)
class DataInfo:
    n_vocab: int  # ids the tokenizer can produce
    vocab_size: int  # the model's vocab_size (padded, see presets.padded_vocab_size)
    train_tokens: int | None
    val_tokens: int | None
    exact: bool  # the counts come from finished shards (or a character tokenizer), not an estimate
    encoded: bool  # shards exist: a run starts training at once
    problem: str | None  # why this corpus cannot be encoded with this tokenizer, if it cannot


@dataclass(frozen=True)
class DataState:
    """Where the encoding of a run's corpus stands."""
    status: str  # "ready" | "encoding" | "failed"
    progress: float = 0.0
    eta_seconds: float | None = None
    message: str = ""
    shards_id: int | None = None


def corpus_choices(*, user):
    return corpora_selectors.corpus_list(user=user).filter(kind=Corpus.Kind.TEXT)  # pretraining reads text


def tokenizer_choices(*, user):
    return tokenization_selectors.tokenizer_list(user=user, ready_only=True)


def corpus_find(*, name: str, user) -> Corpus | None:
    return corpus_choices(user=user).filter(name__iexact=name).first()


def tokenizer_find(*, names, user) -> Tokenizer | None:
    """The first of `names` that exists and is ready."""
    choices = tokenizer_choices(user=user)
    for name in names:
        if found := choices.filter(name=name).first():
            return found
    return None


def small_bpe_for(*, corpus: Corpus | None, user) -> Tokenizer | None:
    """A BPE trained on this corpus with a small vocabulary (the "small BPE" preset prefers one)."""
    if corpus is None:
        return None
    return (tokenizer_choices(user=user).filter(kind=Tokenizer.Kind.BPE, corpus=corpus, n_vocab__gte=300)
            .order_by("n_vocab").first())


def n_vocab(tokenizer: Tokenizer) -> int:
    if tokenizer.n_vocab:
        return tokenizer.n_vocab
    return tokenization_selectors.tokenizer_runtime(tokenizer=tokenizer).n_vocab


def data_info(*, corpus: Corpus, tokenizer: Tokenizer) -> DataInfo:
    """Vocabulary and split sizes in tokens: exact when the pair is encoded (or the tokenizer is per-character),
    estimated from the tokenizer's ratio on other text otherwise."""
    vocab = n_vocab(tokenizer)
    problem = data_problem(corpus=corpus, tokenizer=tokenizer)
    split = corpus.split
    train_chars, val_chars = split.get("train_chars"), split.get("val_chars")
    shards = _finished_shards(corpus, tokenizer)
    if shards is not None:
        return DataInfo(vocab, padded_vocab_size(vocab), shards.n_train_tokens, shards.n_val_tokens, True, True,
                        problem)
    if train_chars is None:
        return DataInfo(vocab, padded_vocab_size(vocab), None, None, False, False, problem)
    if tokenizer.kind == Tokenizer.Kind.CHAR:
        return DataInfo(vocab, padded_vocab_size(vocab), train_chars, val_chars, True, False, problem)
    ratio = (Shards.objects.filter(tokenizer=tokenizer, status=JobStatus.SUCCEEDED)
             .aggregate(r=Avg("tokens_per_char"))["r"]) or DEFAULT_TOKENS_PER_CHAR
    return DataInfo(vocab, padded_vocab_size(vocab), math.ceil(train_chars * ratio), math.ceil(val_chars * ratio),
                    False, False, problem)


def data_problem(*, corpus: Corpus, tokenizer: Tokenizer) -> str | None:
    """Why the corpus cannot be encoded with the tokenizer (a character tokenizer built from other text lacks some of
    its characters), or None."""
    if tokenizer.kind != Tokenizer.Kind.CHAR or tokenizer.corpus_id == corpus.pk:
        return None
    runtime = tokenization_selectors.tokenizer_runtime(tokenizer=tokenizer)
    return missing_chars_error(tokenizer=tokenizer.name, corpus=corpus.name, alphabet=corpus.stats.get("alphabet", ""),
                               chars=runtime.chars)


def data_prepare(*, corpus_id: int, tokenizer_id: int, user=None) -> DataState:
    """Make sure the corpus is encoded with the tokenizer: starts the encoding job (on the infer queue) if needed,
    and says where it stands. A write (it locks the shards row): call it once, then follow with data_state."""
    try:
        shards = corpora_services.shards_ensure(corpus_id=corpus_id, tokenizer_id=tokenizer_id, user=user)
    except (Corpus.DoesNotExist, Tokenizer.DoesNotExist):
        return DataState("failed", message="the run's corpus or tokenizer was deleted")
    except ValueError as exc:  # CorpusInputError: the pair cannot be encoded
        return DataState("failed", message=str(exc))
    return _state(shards)


def data_state(*, shards_id: int) -> DataState:
    """Where the encoding data_prepare started stands now: a read, cheap to repeat while waiting."""
    try:
        shards = corpora_selectors.shards_get(shards_id=shards_id)
    except Shards.DoesNotExist:
        return DataState("failed", message="the encoding of the run's corpus was deleted while the run waited for it")
    return _state(shards)


def _state(shards: Shards) -> DataState:
    if shards.status == JobStatus.SUCCEEDED:
        return DataState("ready", 1.0, shards_id=shards.pk)
    if shards.status in JobStatus.active():
        return DataState("encoding", shards.progress or 0.0, shards.eta_seconds, shards_id=shards.pk)
    what = "was cancelled" if shards.status == JobStatus.CANCELLED else f"failed: {shards.error or 'no reason given'}"
    return DataState("failed", message=f"encoding {shards.corpus} with {shards.tokenizer} {what}",
                     shards_id=shards.pk)


def data_files(*, shards_id: int):
    """The token files of finished shards: .train and .val paths, dtype, token counts, n_vocab (ValueError if gone)."""
    return corpora_selectors.shards_files(shards_id=shards_id)


def tokenizer_runtime(*, tokenizer_id: int):
    """The tokenizer object (encode/decode) for a tokenizer row."""
    return tokenization_selectors.tokenizer_runtime(tokenizer=Tokenizer.objects.get(pk=tokenizer_id))


def _finished_shards(corpus: Corpus, tokenizer: Tokenizer) -> Shards | None:
    key = corpora_services.shards_cache_key(corpus=corpus, tokenizer=tokenizer)
    for shards in Shards.objects.filter(cache_key=key, status=JobStatus.SUCCEEDED).order_by("-finished"):
        if corpora_selectors.shards_files_exist(shards=shards):
            return shards
    return None
