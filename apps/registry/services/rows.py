"""A model row's life: its name, the all-or-nothing step that turns finished files into a row, and the staff's
changes (rename, publish/archive, delete). The import, lineage and export services build on these."""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.text import slugify

from apps.registry.errors import RegistryError
from apps.registry.models import Model, export_dir, model_dir
from apps.system import files
from apps.tokenization.services import tokenizer_imported_create, tokenizer_imported_delete
from workers.gpt.config import GPTConfig


def require_staff(user, action: str) -> None:
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


def unique_slug(name: str, *, exclude_id: int | None = None) -> str:
    base = slugify(name)[:90] or "model"
    slug, n = base, 2
    while Model.objects.filter(slug=slug).exclude(pk=exclude_id).exists():
        slug, n = f"{base}-{n}", n + 1
    return slug


def unique_name(name: str) -> str:
    candidate, n = name[:100], 2
    while Model.objects.filter(name=candidate).exists():
        suffix = f" ({n})"
        candidate, n = name[: 100 - len(suffix)] + suffix, n + 1
    return candidate


def architecture_of(cfg: GPTConfig) -> str:
    return "llama" if cfg.pos == "rope" else "gpt2"


def finish_files(*, tmp: Path, weights_name: str, **fields) -> Model:
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
                model.tokenizer = register_tokenizer(model)
                model.save(update_fields=["tokenizer_spec", "tokenizer"])
    except BaseException:
        files.remove(tmp)
        if model is not None and model.pk:  # the row was rolled back: its folder must go too
            files.remove(files.artifact_path(model_dir(model.pk)))
        raise
    return model


def register_tokenizer(model: Model):
    """Give an imported tokenizer a row in apps.tokenization (through its service), so the playground offers it."""
    return tokenizer_imported_create(name=model.slug, model_name=model.name, path=model.tokenizer_spec["path"],
                                     owner=model.owner)


# ----------------------------------------------------------------------------------------------------------------------
# change: staff only


def model_update(*, model: Model, user, name: str | None = None, description: str | None = None,
                 status: str | None = None) -> Model:
    require_staff(user, "change")
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
    require_staff(user, "change")
    if status not in Model.Status.values:
        raise RegistryError(f"status must be one of {', '.join(Model.Status.values)}")
    return models.update(status=status, updated=timezone.now())


def model_delete(*, model: Model, user) -> None:
    """Delete a model and its files (weights, sidecar, imported tokenizer, exported archives)."""
    require_staff(user, "delete")
    model_delete_files_and_row(model)


def model_delete_files_and_row(model: Model) -> None:
    """The delete itself, without the permission check (the seed command replaces a model whose weights are gone).
    Export rows go with the model (CASCADE); their archives, in exports/<id>/, are removed once the delete commits
    (an export still running sees its row gone and removes what it wrote)."""
    directory = model.directory if model.path else None
    exports = files.artifact_path(export_dir(model.pk))
    tokenizer = model.tokenizer if model.tokenizer_spec.get("kind") == "imported" else None
    with transaction.atomic():
        model.delete()
        if tokenizer is not None and not tokenizer.models.exists():
            tokenizer_imported_delete(tokenizer_id=tokenizer.pk)
    if directory is not None and directory.parent == files.artifact_path("models"):
        transaction.on_commit(lambda: files.remove(directory))
    transaction.on_commit(lambda: files.remove(exports))
