"""Exporting a model is a job: the model page's form queues it, the infer worker's task writes the zip under
ARTIFACTS_DIR, the page follows it and then offers the download. Asking again while it runs gets the same job; it can
be cancelled; a refusal shows its reason; other people's drafts stay invisible; the files go with the model."""

import io
import json
import zipfile
from datetime import timedelta

import pytest
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone

from apps.registry import services
from apps.registry.models import ModelExport, export_dir
from apps.system import files
from tests.apps.registry.factories import make_model
from workers import tasks
from workers.gpt.formats import ImportRefused
from workers.gpt.formats.llmlab import read_checkpoint
from workers.gpt.formats.safetensors import read_safetensors

pytestmark = pytest.mark.django_db


@pytest.fixture
def gpt_model(run_checkpoint, ada):
    """A tiny GPT-2-style model (1 layer, 16 wide, GPT-2's tokenizer): ada's draft, promoted from her run."""
    ckpt, _ = run_checkpoint
    return services.model_promote(checkpoint=ckpt, user=ada, name="Tiny GPT")


@pytest.fixture
def queued(monkeypatch):
    """The export tasks that would have gone to the infer queue (the test runs them itself)."""
    sent = []
    monkeypatch.setattr(services.exports, "_enqueue_export", sent.append)
    return sent


def start(client, model, fmt="hf", **headers):
    return client.post(f"/models/{model.slug}/export/", {"format": fmt}, **headers)


def fragment(client, model) -> str:
    return client.get(f"/models/{model.slug}/exports/").content.decode()


def test_the_export_job_zips_a_gpt_model_that_then_downloads(gpt_model, ada, client, queued, tmp_path,
                                                             django_capture_on_commit_callbacks):
    client.force_login(ada)
    with django_capture_on_commit_callbacks(execute=True):
        assert start(client, gpt_model).status_code == 302
    job = ModelExport.objects.get()
    assert queued == [job.pk] and job.status == ModelExport.Status.QUEUED and job.owner == ada
    assert 'hx-trigger="every 1s"' in fragment(client, gpt_model)  # the page polls while it runs
    start(client, gpt_model)  # a second click while it runs: the same job
    assert ModelExport.objects.count() == 1 and queued == [job.pk]

    assert tasks.model_export(job.pk) == "succeeded"  # what the infer worker runs
    job.refresh_from_db()
    assert job.progress == 1.0 and job.file.is_relative_to(files.artifact_path(export_dir(gpt_model.pk)))
    assert job.size_bytes == job.file.stat().st_size
    assert not [p for p in job.file.parent.iterdir() if p != job.file]  # the work folder is gone
    page = fragment(client, gpt_model)
    assert "every 1s" not in page and f"/exports/{job.pk}/download/" in page

    response = client.get(f"/models/{gpt_model.slug}/exports/{job.pk}/download/")
    assert f'filename="{gpt_model.slug}-hf.zip"' in response["Content-Disposition"]
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    slug = gpt_model.slug
    assert set(archive.namelist()) == {f"{slug}/{name}" for name in (
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")}
    config = json.loads(archive.read(f"{slug}/config.json"))
    assert (config["model_type"], config["n_layer"], config["n_embd"], config["eos_token_id"]) == ("gpt2", 1, 16, 50256)
    archive.extract(f"{slug}/model.safetensors", tmp_path)
    exported, _ = read_safetensors(tmp_path / slug / "model.safetensors")
    _, ours, _ = read_checkpoint(gpt_model.file)
    assert (exported["transformer.wte.weight"] == ours["transformer.wte.weight"]).all()
    assert (exported["transformer.h.0.attn.c_attn.weight"] == ours["transformer.h.0.attn.c_attn.weight"].T).all()
    assert json.loads(archive.read(f"{slug}/tokenizer.json"))["model"]["type"] == "BPE"

    start(client, gpt_model)  # once done, asking again offers the same archive
    assert ModelExport.objects.count() == 1 and queued == [job.pk]


def test_a_llama_model_exports_with_its_kv_heads_and_chat_template(tmp_path, queued):
    model = make_model(tmp_path, name="Exportable")
    job, new = services.model_export_create(model=model, user=AnonymousUser(), fmt="hf")
    assert new and job.owner is None
    job = services.model_export_run(export_id=job.pk)
    archive = zipfile.ZipFile(job.file)
    config = json.loads(archive.read(f"{model.slug}/config.json"))
    assert config["model_type"] == "llama" and config["num_key_value_heads"] == 2
    assert json.loads(archive.read(f"{model.slug}/tokenizer_config.json"))["chat_template"] == model.chat_template


def test_another_users_draft_and_its_exports_look_absent(gpt_model, ada, bob, client, queued):
    client.force_login(ada)
    start(client, gpt_model)
    job = ModelExport.objects.get()
    tasks.model_export(job.pk)
    client.force_login(bob)
    base = f"/models/{gpt_model.slug}"
    assert start(client, gpt_model).status_code == 404
    assert client.get(f"{base}/exports/").status_code == 404
    assert client.get(f"{base}/exports/{job.pk}/download/").status_code == 404
    assert client.post(f"{base}/exports/{job.pk}/cancel/").status_code == 404
    assert ModelExport.objects.count() == 1


def test_only_who_asked_the_owner_or_staff_may_cancel(tmp_path, ada, bob, staff, client, queued):
    model = make_model(tmp_path, name="Public", owner=staff)  # published: bob sees it and may export it
    client.force_login(ada)
    start(client, model)
    job = ModelExport.objects.get()
    client.force_login(bob)
    assert client.post(f"/models/{model.slug}/exports/{job.pk}/cancel/").status_code == 403
    assert "cancel" not in fragment(client, model).split("<form")[1]  # no cancel button for bob
    client.force_login(ada)
    assert client.post(f"/models/{model.slug}/exports/{job.pk}/cancel/").status_code == 302
    job.refresh_from_db()
    assert job.status == ModelExport.Status.CANCELLED  # it was only queued: cancelled at once
    assert tasks.model_export(job.pk) == "skipped"  # the worker that picks it up does nothing


def test_cancel_stops_a_running_export_and_leaves_no_files(gpt_model, ada, queued, monkeypatch):
    job, _ = services.model_export_create(model=gpt_model, user=ada, fmt="hf")
    real = services.exports.selectors.model_tokenizer

    def cancel_meanwhile(model):  # the user clicks cancel while the worker converts
        services.model_export_cancel(job=ModelExport.objects.get(pk=job.pk), user=ada)
        return real(model)

    monkeypatch.setattr(services.exports.selectors, "model_tokenizer", cancel_meanwhile)
    done = services.model_export_run(export_id=job.pk)
    assert done.status == ModelExport.Status.CANCELLED and not done.path and done.finished is not None
    folder = files.artifact_path(export_dir(gpt_model.pk))
    assert not [p for p in folder.rglob("*") if p.is_file()]
    job, new = services.model_export_create(model=gpt_model, user=ada, fmt="hf")  # a new try replaces it
    assert new and ModelExport.objects.count() == 1


def test_a_refused_export_shows_the_reason_on_the_page(gpt_model, ada, client, queued, monkeypatch):
    from workers.gpt.formats import hf

    def refuse(cfg):
        raise ImportRefused("no Hugging Face architecture runs this block style")

    monkeypatch.setattr(hf, "hf_architecture", refuse)
    client.force_login(ada)
    start(client, gpt_model)
    assert tasks.model_export(ModelExport.objects.get().pk) == "failed"
    page = client.get(f"/models/{gpt_model.slug}/").content.decode()
    assert "cannot be exported to the Hugging Face layout: no Hugging Face architecture runs" in page


@pytest.mark.parametrize("htmx", [False, True])
def test_an_unknown_format_is_refused_with_a_message(gpt_model, ada, client, queued, htmx):
    client.force_login(ada)
    headers = {"HTTP_HX_REQUEST": "true"} if htmx else {}
    response = start(client, gpt_model, fmt="pickle", **headers)
    assert response.status_code == 400
    assert "Unknown export format &#x27;pickle&#x27;: choose one of hf" in response.content.decode()
    assert not ModelExport.objects.exists() and not queued


def test_deleting_the_model_removes_its_exports(gpt_model, ada, staff, queued, django_capture_on_commit_callbacks):
    job, _ = services.model_export_create(model=gpt_model, user=ada, fmt="hf")
    archive = services.model_export_run(export_id=job.pk).file
    assert archive.exists()
    with django_capture_on_commit_callbacks(execute=True):
        services.model_delete(model=gpt_model, user=staff)
    assert not ModelExport.objects.exists() and not archive.parent.exists()


def test_an_export_whose_worker_died_is_replaced_by_the_next_request(gpt_model, ada, queued):
    job, _ = services.model_export_create(model=gpt_model, user=ada, fmt="hf")
    ModelExport.objects.filter(pk=job.pk).update(status=ModelExport.Status.RUNNING,
                                                 updated=timezone.now() - timedelta(minutes=5))
    again, new = services.model_export_create(model=gpt_model, user=ada, fmt="hf")
    assert new and again.pk != job.pk and again.status == ModelExport.Status.QUEUED
    assert not ModelExport.objects.filter(pk=job.pk).exists()
    ModelExport.objects.filter(pk=again.pk).update(status=ModelExport.Status.RUNNING, updated=timezone.now())
    assert services.model_export_create(model=gpt_model, user=ada, fmt="hf") == (again, False)  # alive: kept
