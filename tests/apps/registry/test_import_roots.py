"""Server-path imports read only inside REGISTRY_IMPORT_ROOTS, symlinks followed first: a staff member's typo or a
planted link cannot make the server open /etc/shadow (or any file outside the configured folders)."""

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from apps.registry import services
from apps.registry.models import ModelImport
from apps.registry.services import RegistryError
from tests.apps.registry.factories import tiny_gguf

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff():
    return User.objects.create_user("staff", password="pw-staff-1234", is_staff=True)


@pytest.fixture
def roots(tmp_path, settings):
    """An allowed folder and, beside it, one outside the roots holding a real model file."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    settings.REGISTRY_IMPORT_ROOTS = [allowed]
    return allowed, outside


def test_a_symlink_leading_outside_the_roots_is_refused_and_queues_nothing(roots, staff, monkeypatch):
    allowed, outside = roots
    link = allowed / "model.gguf"
    link.symlink_to(tiny_gguf(outside))
    monkeypatch.setattr(services.imports, "_enqueue_import", lambda import_id: pytest.fail("nothing may be queued"))
    with pytest.raises(RegistryError, match="outside the folders imports may read from"):
        services.model_import_create(user=staff, source_path=str(link), name="Linked")
    assert not ModelImport.objects.exists()


def test_a_directory_holding_a_link_to_a_file_outside_is_refused(roots, staff):
    allowed, outside = roots
    secret = outside / "shadow"
    secret.write_text("root:x:0:0")
    hf = allowed / "hf-model"
    hf.mkdir()
    (hf / "config.json").symlink_to(secret)
    with pytest.raises(RegistryError, match="REGISTRY_IMPORT_ROOTS"):
        services.model_import_create(user=staff, source_path=str(hf), name="Sneaky")


def test_a_path_outside_the_roots_is_refused_even_through_dot_dot(roots, staff):
    allowed, outside = roots
    sneaky = allowed / ".." / "outside" / tiny_gguf(outside).name
    with pytest.raises(RegistryError, match="outside"):
        services.model_import_create(user=staff, source_path=str(sneaky), name="Dotted")


def test_the_import_command_refuses_a_link_outside_the_roots(roots):
    allowed, outside = roots
    link = allowed / "model.gguf"
    link.symlink_to(tiny_gguf(outside))
    with pytest.raises(CommandError, match="outside the folders"):
        call_command("import_model", str(link), stdout=io.StringIO())


def test_a_file_inside_the_roots_is_accepted(roots, staff, monkeypatch):
    allowed, _ = roots
    monkeypatch.setattr(services.imports, "_enqueue_import", lambda import_id: None)
    job = services.model_import_create(user=staff, source_path=str(tiny_gguf(allowed)), name="Fine")
    assert job.status == ModelImport.Status.QUEUED


def test_the_default_roots_are_the_artifacts_folder_and_the_smollm2_package(settings):
    from config.settings import _import_roots

    roots = _import_roots()
    assert roots[0] == settings.ARTIFACTS_DIR
    gguf = services.smollm2_gguf_path()
    if gguf is not None:
        assert any(gguf.resolve().is_relative_to(r) for r in roots)
