"""Reads: which models a user may explore (the "sources"), a trace's state, and the explorer's limits.

A source is anything with GPT weights the library can run: a model in the registry, or a checkpoint of a training
run. Both are named by a short reference that travels in URLs and task arguments: "model:<id>" or
"checkpoint:<id>". Everything the explorer needs to know about the other apps' rows goes through this module.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from dataclasses import dataclass, field

from django.conf import settings
from django.utils.translation import gettext as _

from apps.explorer.models import Share, Trace
from apps.registry.models import Model as RegistryModel
from apps.training.models import Checkpoint, Run
from workers.gpt.config import GPTConfig, param_count


class ExplorerError(ValueError):
    """Input the explorer refuses; the message says why and what to do. status: the HTTP status to answer."""
    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


class SourceNotFound(ExplorerError):
    def __init__(self, message: str):
        super().__init__(message, status=404)


@dataclass(frozen=True)
class Source:
    """One model the explorer can trace, as the page and the worker see it."""
    ref: str  # "model:3" | "checkpoint:12"
    label: str
    kind: str  # "model" | "checkpoint"
    config: dict  # GPTConfig.to_dict()
    version: str  # identifies the weights exactly: part of every trace's cache key
    run_id: int | None = None  # the training run it comes from: the across-training slider spans its checkpoints
    step: int | None = None
    detail: str = ""  # a line under the picker: architecture, size
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def token_limit(self) -> int:
        return token_limit(self.config)


def token_limit(config: dict) -> int:
    """The most tokens the explorer traces for a model of this shape (workers.gpt.trace.max_tokens, torch-free)."""
    heads = config["n_layer"] * config["n_head"]
    budget = settings.EXPLORER_TRACE_BUDGET_BYTES
    t = int((math.sqrt(1 + 8 * budget / heads) - 1) / 2)
    return max(1, min(config["block_size"], settings.EXPLORER_MAX_TOKENS, max(128, t)))


def _describe(config: dict) -> str:
    cfg = GPTConfig.from_dict(config)
    style = _("Llama-style") if cfg.pos == "rope" else _("GPT-2-style")
    heads = _("%(n)s heads") % {"n": cfg.n_head} + (f" ({cfg.n_kv_head} KV)" if cfg.n_kv_head != cfg.n_head else "")
    n = param_count(cfg)
    size = f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
    return _("%(style)s · %(size)s params · %(n_layer)s layers × %(heads)s · n_embd %(n_embd)s · block %(block)s") % {
        "style": style, "size": size, "n_layer": cfg.n_layer, "heads": heads, "n_embd": cfg.n_embd,
        "block": cfg.block_size}


def _file_version(path) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


# ---------------------------------------------------------------------------------------------------------------------
# checkpoints of training runs


def _checkpoint_source(ckpt: Checkpoint) -> Source:
    run = ckpt.run
    loss = " · " + _("val %(loss).3f") % {"loss": ckpt.val_loss} if ckpt.val_loss is not None else ""
    return Source(
        ref=f"checkpoint:{ckpt.pk}",
        label=_("%(run)s · step %(step)s") % {"run": run.name, "step": ckpt.step},
        kind="checkpoint",
        config=run.model_config,
        version=f"checkpoint:{ckpt.pk}:{ckpt.path}:{_file_version(ckpt.file)}",
        run_id=run.pk,
        step=ckpt.step,
        detail=_describe(run.model_config) + loss,
        extra={"path": str(ckpt.file), "tokenizer_id": run.tokenizer_id, "val_loss": ckpt.val_loss,
               "tokenizer": _tokenizer_spec(run.tokenizer)},
    )


def _tokenizer_spec(tokenizer) -> dict | None:
    """What the worker needs to load a run's tokenizer (None once the tokenizer was deleted)."""
    if tokenizer is None:
        return None
    return {"kind": tokenizer.kind, "name": tokenizer.name, "path": tokenizer.path,
            "fingerprint": tokenizer.fingerprint}


def _visible_runs(user):
    return Run.objects.visible_to(user)


def run_checkpoints(*, run_id: int, user) -> list[Source]:
    """The checkpoints of a run the user may see, oldest first: the across-training slider's stops."""
    ckpts = (Checkpoint.objects.filter(run_id=run_id, run__in=_visible_runs(user))
             .select_related("run", "run__tokenizer").order_by("step"))
    return [_checkpoint_source(c) for c in ckpts]


# ---------------------------------------------------------------------------------------------------------------------
# models in the registry


def _registry_models(user, *, everything: bool = False):
    """The registry's models the user may use (everything: all of them, for the worker)."""
    return RegistryModel.objects.all() if everything else RegistryModel.objects.usable_by(user)


def _model_source(model) -> Source:
    loss = " · " + _("val %(loss).3f") % {"loss": model.val_loss} if model.val_loss is not None else ""
    return Source(
        ref=f"model:{model.pk}",
        label=model.name,
        kind="model",
        config=model.config,
        version=f"model:{model.pk}:{model.sha256}",
        run_id=model.run_id,
        step=model.step,
        detail=_describe(model.config) + loss,
        extra={"path": str(model.file), "val_loss": model.val_loss, "slug": model.slug, "sha256": model.sha256,
               "tokenizer": model.tokenizer_spec or None},
    )


# ---------------------------------------------------------------------------------------------------------------------


def source_get(*, ref: str, user) -> Source:
    """The source a reference names, if it exists and the user may see it; SourceNotFound saying what to do."""
    return _source(ref, runs=_visible_runs(user), models=_registry_models(user))


def source_resolve(*, ref: str) -> Source:
    """The source a reference names, whoever asked: for the worker, which acts on a request already checked."""
    return _source(ref, runs=Run.objects.all(), models=_registry_models(None, everything=True))


def _source(ref: str, *, runs, models) -> Source:
    kind, _sep, raw_id = (ref or "").partition(":")
    if not raw_id.isdigit():
        raise SourceNotFound(_("%(ref)r is not a model reference: pick a model from the list") % {"ref": ref})
    if kind == "checkpoint":
        ckpt = (Checkpoint.objects.filter(pk=int(raw_id), run__in=runs)
                .select_related("run", "run__tokenizer").first())
        if ckpt is None or not ckpt.file.exists():
            raise SourceNotFound(_("That checkpoint does not exist any more (or is not yours): pick another model"))
        return _checkpoint_source(ckpt)
    if kind == "model":
        model = models.filter(pk=int(raw_id)).first()
        if model is not None and model.file.exists():
            return _model_source(model)
        raise SourceNotFound(_("That model does not exist any more (or is not published): pick another model"))
    raise SourceNotFound(_("%(ref)r is not a model reference: pick a model from the list") % {"ref": ref})


def source_choices(*, user) -> list[tuple[str, list[Source]]]:
    """The model picker: registry models first, then the latest checkpoint of each of the user's runs."""
    groups = []
    if found := [_model_source(m) for m in _registry_models(user).order_by("-status", "name")]:
        groups.append((_("Models"), found))
    latest = {}
    for ckpt in (Checkpoint.objects.filter(run__in=_visible_runs(user)).select_related("run", "run__tokenizer")
                 .order_by("run_id", "step")):
        latest[ckpt.run_id] = ckpt  # the last one per run wins
    runs = [_checkpoint_source(c) for c in sorted(latest.values(), key=lambda c: -c.run_id)]
    if runs:
        groups.append((_("Your training runs (latest checkpoint)"), runs))
    return groups


def source_default(*, user) -> Source | None:
    """What the page shows first: the first registry model (SmolLM2 when seeded), else the newest run."""
    for _group, sources in source_choices(user=user):
        if sources:
            return sources[0]
    return None


# ---------------------------------------------------------------------------------------------------------------------
# traces


def trace_key(*, source: Source, text: str) -> str:
    """The cache key of (weights, text). Keyed with SECRET_KEY, so a trace's URL reveals nothing and cannot be
    guessed from a text."""
    message = f"{source.version}\n{source.ref}\n{text}".encode("utf-8")
    return hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).hexdigest()


def trace_get(*, key: str) -> Trace | None:
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        return None
    return Trace.objects.filter(key=key).first()


def trace_view(trace: Trace) -> dict:
    """What the status fragment and the page's script need (JSON-safe)."""
    return {
        "key": trace.key,
        "status": trace.status,
        "error": trace.error,
        "notes": trace.notes,
        "n_tokens": trace.n_tokens,
        "text_tokens": trace.text_tokens,
        "size_bytes": trace.size_bytes,
        "compute_ms": trace.compute_ms,
        "load_ms": trace.load_ms,
        "source": trace.source,
        "source_label": trace.source_label,
        "pending": trace.pending,
    }


def share_text(*, key: str) -> str:
    """The text a share link's key stands for; ExplorerError (404) for a key nobody made."""
    share = Share.objects.filter(key=key).first() if isinstance(key, str) and len(key) <= 32 else None
    if share is None:
        raise ExplorerError(_("That share link is unknown here (made on another server, or its text was deleted): "
                              "paste the text again."), status=404)
    return share.text
