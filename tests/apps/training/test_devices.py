"""The submit form's devices field: a run over several processes from the form, and every impossible request
refused with what exists (more devices than any live train worker has, a batch that does not divide among them)."""

import time

import pytest

from apps.system.services import worker_record_heartbeat
from apps.training.forms import RunForm
from apps.training.models import Metric, Run
from tests.training_fixtures import form_data, make_run
from workers import training as glue


def heartbeat(name, *, kind="cpu", cores=2, count=1):
    device = {"kind": kind, "name": "Test device", "cores": cores, "count": count, "memory_bytes": 64 * 1024**3,
              "torch": "2"}
    worker_record_heartbeat(status={"name": name, "host": "box", "pid": 1, "queues": ["train"], "pool": "solo",
                                    "concurrency": 1, "python": "3.11", "started": time.time(), "tasks": [],
                                    "device": device, "ts": time.time()})


def errors_of(form) -> dict:
    form.is_valid()
    return {k: " ".join(v) for k, v in form.errors.items()}


@pytest.mark.django_db
def test_the_form_lists_the_live_workers_devices_and_refuses_more_than_any_has(user, tiny_corpus, char_tok,
                                                                               redis_clean):
    heartbeat("train@cpu", cores=2)
    heartbeat("train@gpu", kind="cuda", count=4)
    form = RunForm(form_data(tiny_corpus, char_tok, devices=8, batch_size=8), user=user)
    assert "train@cpu: 2 (2 CPU cores); train@gpu: 4 (4 × CUDA Test device)" in form.fields["devices"].help_text
    assert errors_of(form) == {"devices": "devices (8) is more than any live train worker has: the most is 4 on "
                                          "train@gpu (4 × CUDA Test device). Ask for at most 4, or start a train "
                                          "worker on a machine with more."}
    assert RunForm(form_data(tiny_corpus, char_tok, devices=4), user=user).is_valid()


@pytest.mark.django_db
def test_a_batch_that_does_not_divide_among_the_devices_is_refused_naming_the_values_that_do(
        user, tiny_corpus, char_tok, redis_clean):
    heartbeat("train@gpu", kind="cuda", count=8)
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, devices=3, batch_size=4, grad_accum=1), user=user))
    assert list(errors) == ["devices"] and "cannot be shared among 3 devices" in errors["devices"]
    assert "devices can be 1, 2, 4 here" in errors["devices"]


@pytest.mark.django_db
def test_which_devices_must_be_gpus_a_live_worker_has_one_per_device(user, tiny_corpus, char_tok, redis_clean):
    heartbeat("train@cpu", cores=2)
    heartbeat("train@gpu", kind="cuda", count=4)

    def submit(**changes):
        form = RunForm(form_data(tiny_corpus, char_tok, batch_size=4, **changes), user=user)
        return form, errors_of(form)
    form, errors = submit(devices=2, device_ids=" 0, 2")
    assert errors == {} and form.configs()[1]["device_ids"] == "0,2"  # written as CUDA_VISIBLE_DEVICES is
    assert submit(devices=2, device_ids="1,4")[1] == {"device_ids": (
        "device_ids (1,4): train@gpu has 4 GPU(s), numbered 0..3, so GPU 4 is not there: choose among 0..3")}
    assert "names 1 GPU(s) but devices is 2: name one GPU per device, or set devices to 1" in submit(
        devices=2, device_ids="3")[1]["device_ids"]
    assert "names GPU 1 twice" in submit(devices=2, device_ids="1,1")[1]["device_ids"]
    assert "must be GPU numbers separated by commas" in submit(devices=2, device_ids="cuda:0")[1]["device_ids"]


@pytest.mark.django_db
def test_which_devices_on_cpu_only_workers_is_refused_saying_why(user, tiny_corpus, char_tok, redis_clean):
    heartbeat("train@cpu", cores=2)
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, batch_size=4, devices=2, device_ids="0,1"),
                               user=user))
    assert errors == {"device_ids": "device_ids (0,1) choose GPUs, but train@cpu computes on CPU: leave device_ids "
                                    "empty"}


@pytest.mark.django_db
def test_devices_left_empty_means_one(user, tiny_corpus, char_tok, redis_clean):
    form = RunForm(form_data(tiny_corpus, char_tok), user=user)
    assert form.is_valid(), form.errors and form.configs()[1]["devices"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_run_submitted_with_two_devices_trains_over_two_processes_and_draws_the_one_process_curve(
        client, user, tiny_corpus, char_tok, encoded, redis_clean, no_enqueue, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client.force_login(user)
    response = client.post("/training/new/", form_data(tiny_corpus, char_tok, name="two", devices=2, max_steps=10))
    assert response.status_code == 302, response.content.decode()[:2000]
    two = Run.objects.get(name="two")
    assert two.train_config["devices"] == 2
    one = make_run(user, tiny_corpus, char_tok, max_steps=10)
    for run in (one, two):
        assert glue.train_run(run.pk, worker="train@test") == "succeeded", Run.objects.get(pk=run.pk).reason

    def curve(run):
        return list(Metric.objects.filter(run=run).order_by("step").values_list("step", "loss"))
    assert [s for s, _ in curve(two)] == list(range(1, 11))
    assert [loss for _, loss in curve(two)] == pytest.approx([loss for _, loss in curve(one)], rel=1e-5)
