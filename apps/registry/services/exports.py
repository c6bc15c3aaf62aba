"""Exports: a registry model written out in another layout and zipped, for download. Converting SmolLM2 gives a
~540 MB archive, so it is a ModelExport job run by an infer worker (tasks.model_export), with progress and cancel,
never work inside a request.

- One archive per model and format: asking again while one runs returns that job, and asking after it succeeded
  returns the finished archive (a model's weights never change). Failed and cancelled attempts are replaced.
- The Hugging Face directory is built in a hidden temporary folder under exports/<model id>/, and the zip is written
  atomically (files.write_atomic) beside it: a download never sees half an archive.
- Deleting the model deletes its export rows (CASCADE) and the folder (rows.model_delete_files_and_row); a worker
  still writing sees its row gone, stops, and removes what it wrote.
"""

from __future__ import annotations

import logging
import time
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.registry import selectors
from apps.registry.errors import ExportCancelled, RegistryError
from apps.registry.models import Model, ModelExport, export_dir
from apps.system import files
from apps.system.services import JOB_STALE_SECONDS, job_request_cancel

log = logging.getLogger(__name__)

ZIP_CHUNK = 16 << 20  # bytes copied into the archive between two progress reports (and cancel checks)
CONVERT_SHARE = 0.75  # of the bar: converting; the rest is zipping


def model_export_format_check(fmt: str | None) -> str:
    if fmt not in ModelExport.Format.values:
        choices = ", ".join(f"{value} ({label})" for value, label in ModelExport.Format.choices)
        raise RegistryError(_("Unknown export format %(format)r: choose one of %(choices)s.")
                            % {"format": fmt, "choices": choices}, field="format")
    return fmt


def model_export_create(*, model: Model, user, fmt: str | None) -> tuple[ModelExport, bool]:
    """The export of `model` in format `fmt` (the caller has checked the user may see the model): the running or
    finished one if there is one, else a new job queued for an infer worker. Returns (job, whether it is new). One
    whose worker went silent (_stale) is replaced."""
    fmt = model_export_format_check(fmt)
    with transaction.atomic():
        Model.objects.select_for_update().filter(pk=model.pk).first()  # one request at a time per model
        if not ModelExport.objects.filter(model=model).exists():  # left by a model deleted outside the app
            files.remove(files.artifact_path(export_dir(model.pk)))
        for job in ModelExport.objects.filter(model=model, format=fmt):
            running = job.active and not (job.status == ModelExport.Status.RUNNING and _stale(job))
            if running or (job.status == ModelExport.Status.SUCCEEDED and job.file and job.file.exists()):
                return job, False
            _remove(job)  # failed, cancelled, silent, or its archive is gone: replaced by the new one
        job = ModelExport.objects.create(model=model, format=fmt, owner=user if user.is_authenticated else None)
        transaction.on_commit(lambda: _enqueue_export(job.pk))
    return job, True


def _stale(job: ModelExport) -> bool:
    """A running export whose worker has not written progress for a while has lost its worker (killed, restarted):
    asking again replaces it instead of waiting on it forever."""
    return (timezone.now() - job.updated).total_seconds() > JOB_STALE_SECONDS


def _enqueue_export(export_id: int) -> None:
    from workers.tasks import model_export as model_export_task

    model_export_task.delay(export_id)


def _remove(job: ModelExport) -> None:
    if job.file is not None:
        files.remove(job.file)
    job.delete()


def model_export_cancel(*, job: ModelExport, user) -> ModelExport:
    if not selectors.model_export_may_cancel(job=job, user=user):
        raise PermissionDenied(_("Only who asked for this export, the model's owner or staff may cancel it."))
    job, _active = job_request_cancel(ModelExport, job.pk)
    return job


def model_export_run(*, export_id: int) -> ModelExport | None:
    """Run an export job to its end (called by the worker): succeeded with an archive, failed with the reason, or
    cancelled. Progress, phase and ETA are written as it goes."""
    from workers.gpt.formats import ImportRefused
    from workers.gpt.formats.hf import export_hf

    if not ModelExport.objects.filter(pk=export_id, status=ModelExport.Status.QUEUED).update(
            status=ModelExport.Status.RUNNING, started=timezone.now(), phase="starting", updated=timezone.now()):
        return None  # cancelled while queued, or the model was deleted
    job = ModelExport.objects.select_related("model").get(pk=export_id)
    model, began = job.model, time.monotonic()

    def on_progress(fraction: float, phase: str) -> None:
        elapsed = time.monotonic() - began
        eta = elapsed * (1 - fraction) / fraction if fraction >= 0.05 else None
        alive = ModelExport.objects.filter(pk=export_id).update(progress=fraction, phase=phase, eta_seconds=eta,
                                                                 updated=timezone.now())
        if not alive or ModelExport.objects.filter(pk=export_id, cancel_requested=True).exists():
            raise ExportCancelled()

    folder = files.artifact_path(export_dir(model.pk))
    work = files.temp_dir(folder, "export")
    archive = folder / f"{model.slug}-{job.format}-{job.pk}.zip"
    status, error = ModelExport.Status.FAILED, ""
    try:
        tokenizer = selectors.model_tokenizer(model)
        export_hf(model.file, work / model.slug,
                  tokenizer=tokenizer if hasattr(tokenizer, "mergeable_ranks") else None,
                  chat_template=model.chat_template or None, stop_ids=model.stop_ids,
                  on_progress=lambda f, phase: on_progress(CONVERT_SHARE * f, phase))
        files.write_atomic(archive, lambda out: zip_tree(
            work, model.slug, out,
            on_progress=lambda f: on_progress(CONVERT_SHARE + (1 - CONVERT_SHARE) * f, "zipping")))
        status = ModelExport.Status.SUCCEEDED
    except ExportCancelled:
        status = ModelExport.Status.CANCELLED
    except (ImportRefused, RegistryError) as e:
        error = f"{model.name} cannot be exported to the Hugging Face layout: {e}"
    except Exception as e:  # a failure the user must see, not only the log
        log.exception("export %s failed", export_id)
        error = f"the export failed unexpectedly: {type(e).__name__}: {e}"
    finally:
        files.remove(work)
    done = status == ModelExport.Status.SUCCEEDED
    result = ({"progress": 1.0, "path": files.artifact_relative(archive), "size_bytes": archive.stat().st_size}
              if done else {})
    recorded = ModelExport.objects.filter(pk=export_id).update(
        status=status, error=error, finished=timezone.now(), phase="", eta_seconds=None, updated=timezone.now(),
        **result)
    if not done or not recorded:  # nothing usable was made, or the model was deleted meanwhile
        files.remove(archive)
    return ModelExport.objects.filter(pk=export_id).first()


def zip_tree(root: Path, name: str, out: BinaryIO, *, on_progress: Callable[[float], None]) -> None:
    """Zip the directory root/name into `out`, with paths starting at name/. Weights are stored as they are (float32
    barely compresses, and storing is ~20x faster than deflate); the JSON files are deflated. Copied in chunks, with
    on_progress(fraction of the bytes) after each (it may raise to stop)."""
    paths = sorted(p for p in (root / name).rglob("*") if p.is_file())
    total, done = sum(p.stat().st_size for p in paths) or 1, 0
    with zipfile.ZipFile(out, "w") as archive:
        for path in paths:
            info = zipfile.ZipInfo.from_file(path, arcname=str(path.relative_to(root)))
            info.compress_type = zipfile.ZIP_STORED if path.suffix == ".safetensors" else zipfile.ZIP_DEFLATED
            with open(path, "rb") as src, archive.open(info, "w", force_zip64=True) as dst:
                while chunk := src.read(ZIP_CHUNK):
                    dst.write(chunk)
                    done += len(chunk)
                    on_progress(done / total)
