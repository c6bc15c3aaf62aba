"""Reads for the model registry: who sees which model, a model's lineage and files, and its tokenizer."""

from __future__ import annotations

import functools
from pathlib import Path

from django.db.models import QuerySet
from django.urls import NoReverseMatch, reverse

from apps.registry.models import Model, ModelExport, ModelImport
from apps.registry.errors import RegistryError
from apps.system import files
from apps.tokenization.models import Tokenizer
from apps.tokenization.selectors import tokenizer_runtime
from workers.gpt.config import GPTConfig


def model_list(*, user, include_archived: bool = True) -> QuerySet[Model]:
    qs = Model.objects.visible_to(user) if include_archived else Model.objects.usable_by(user)
    return qs.select_related("owner", "tokenizer", "run")


def model_get(*, slug: str, user) -> Model:
    """A model the user may see, by slug; RegistryError 404 otherwise (a draft of someone else looks absent)."""
    model = model_list(user=user).filter(slug=slug).first()
    if model is None:
        raise RegistryError(f"There is no model {slug!r} (or it is not published).", status=404)
    return model


def model_usable(*, ref, user) -> Model:
    """A model the user may generate with, by id or slug: visible and not archived."""
    qs = Model.objects.usable_by(user)
    model = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        model = qs.filter(pk=int(ref)).first()
    if model is None and isinstance(ref, str) and ref:
        model = qs.filter(slug=ref).first() or qs.filter(name=ref).first()
    if model is None:
        raise RegistryError(f"The model {ref!r} does not exist or is not available to you: pick one from the list "
                            f"(GET /v1/models lists them).", status=404)
    return model


def model_may_change(*, model: Model, user) -> bool:
    return user is not None and user.is_authenticated and user.is_staff


def model_lineage(model: Model) -> list[dict]:
    """corpus → tokenizer → run → checkpoint → model, each {"kind", "label", "url"} (url None where the row is gone)."""
    steps = []
    lin = model.lineage or {}
    if model.base_id is not None or lin.get("base_model"):  # fine-tuned: base model -> data set -> run
        base_url = reverse("registry:detail", args=[model.base.slug]) if model.base_id else None
        steps.append({"kind": "base model", "label": lin.get("base_model") or "?", "url": base_url})
        corpus_url = _url("corpora:detail", lin.get("corpus_id")) if lin.get("corpus_id") else None
        steps.append({"kind": "data set", "label": lin.get("corpus") or "?", "url": corpus_url})
        run_url = _url("training:run", model.run_id) if model.run_id else None
        steps.append({"kind": "run", "label": lin.get("run") or "?", "url": run_url})
    elif model.source == Model.Source.RUN:
        corpus_url = _url("corpora:detail", lin.get("corpus_id")) if lin.get("corpus_id") else None
        steps.append({"kind": "corpus", "label": lin.get("corpus") or "?", "url": corpus_url})
        steps.append({"kind": "tokenizer", "label": lin.get("tokenizer") or "?", "url": _tokenizer_url(model)})
        run_url = _url("training:run", model.run_id) if model.run_id else None
        steps.append({"kind": "run", "label": lin.get("run") or "?", "url": run_url})
        steps.append({"kind": "checkpoint", "label": f"step {model.step:,}" if model.step is not None else "?",
                      "url": run_url})
    else:
        detail = model.source_detail or {}
        steps.append({"kind": "file", "label": lin.get("file") or detail.get("file") or "?", "url": None})
        label = model.tokenizer.name if model.tokenizer else model.tokenizer_spec.get("name") or "?"
        steps.append({"kind": "tokenizer", "label": label, "url": _tokenizer_url(model)})
    steps.append({"kind": "model", "label": model.name, "url": reverse("registry:detail", args=[model.slug])})
    return steps


def _url(name: str, *args) -> str | None:
    try:
        return reverse(name, args=args)
    except NoReverseMatch:
        return None


def _tokenizer_url(model: Model) -> str | None:
    if model.tokenizer is None:
        return None
    try:
        return reverse("tokenization:playground") + f"?tokenizers={model.tokenizer.name}"
    except NoReverseMatch:
        return None


def model_files(model: Model) -> list[dict]:
    """The files behind a model, as the detail page and the admin offer them for download."""
    out = []
    for kind, path in (("weights", model.file), ("sidecar", model.sidecar)):
        out.append({"kind": kind, "name": path.name, "size": path.stat().st_size if path.exists() else None,
                    "exists": path.exists()})
    return out


def model_file_path(*, model: Model, kind: str) -> Path:
    if kind == "weights":
        return model.file
    if kind == "sidecar":
        return model.sidecar
    raise RegistryError(f"unknown file {kind!r}: weights or sidecar", status=404)


def model_config(model: Model) -> GPTConfig:
    return GPTConfig.from_dict(model.config)


def model_summary(model: Model) -> str:
    cfg = model_config(model)
    style = "Llama-style" if cfg.pos == "rope" else "GPT-2-style"
    heads = f"{cfg.n_head} heads" + (f" ({cfg.n_kv_head} KV)" if cfg.n_kv_head != cfg.n_head else "")
    return f"{style} · {human_count(model.n_params)} params · {cfg.n_layer} layers × {heads} · context {cfg.block_size:,}"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def model_tokenizer(model: Model):
    """The model's tokenizer (encode/decode; no torch). Imported ones load from the model's folder; the others
    through apps.tokenization, from the spec even if their row was deleted."""
    spec = model.tokenizer_spec or {}
    if spec.get("chatml"):  # a fine-tune added ChatML's two tokens after the base vocabulary (deterministic)
        from workers.gpt.conversations import with_chatml

        return with_chatml(model_tokenizer(Model(name=model.name, tokenizer=model.tokenizer,
                                                 tokenizer_spec={k: v for k, v in spec.items() if k != "chatml"})))
    if spec.get("kind") == "imported":
        return _imported_tokenizer(spec["path"])
    if not spec:
        raise RegistryError(f"{model.name} has no tokenizer recorded.", status=409)

    row = model.tokenizer or Tokenizer(kind=spec["kind"], name=spec["name"], path=spec.get("path", ""),
                                       fingerprint=spec.get("fingerprint", ""))
    return tokenizer_runtime(tokenizer=row)


@functools.lru_cache(maxsize=16)
def _imported_tokenizer(path: str):
    from workers.gpt.tokenizers import load_imported

    return load_imported(files.artifact_path(path))


def import_list(*, user) -> QuerySet[ModelImport]:
    if user is None or not user.is_authenticated or not user.is_staff:
        return ModelImport.objects.none()
    return ModelImport.objects.select_related("model", "owner")[:20]


def model_exports(*, model: Model) -> list[ModelExport]:
    """The latest export of the model in each format (what its page shows: progress, the error, or the download)."""
    latest: dict[str, ModelExport] = {}
    for job in ModelExport.objects.filter(model=model).select_related("owner"):
        latest.setdefault(job.format, job)
    return list(latest.values())


def model_export_get(*, model: Model, export_id: int) -> ModelExport:
    job = ModelExport.objects.filter(model=model, pk=export_id).select_related("model").first()
    if job is None:
        raise RegistryError(f"{model.name} has no export {export_id}.", status=404)
    return job


def model_export_may_cancel(*, job: ModelExport, user) -> bool:
    """Who asked for the export, the model's owner, and staff."""
    if user is None or not user.is_authenticated:
        return False
    return user.is_staff or user.pk in (job.owner_id, job.model.owner_id)
