"""The one time estimator behind the pretraining, fine-tuning and GRPO forms: measured ms/step of earlier runs of the
same shape on the same device win and give a narrow range; without them the FLOPs model gives a wide one."""

import pytest

from apps.system.devices import device_profile_record
from apps.training import selectors
from apps.training.estimates import MODEL_RANGE, shape_key, time_estimate, worker_times
from apps.training.forms import RunForm
from apps.training.forms_sft import FinetuneForm
from apps.training.models import DeviceProfile, Metric, Run
from tests.apps.training.test_forms import heartbeat
from tests.sft_fixtures import base, chats  # noqa: F401  (fixtures)
from tests.training_fixtures import form_data, make_run

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _workers_stay_live(settings):
    settings.WORKER_GONE_SECONDS = 600  # a heartbeat stays live through a slow test on a busy machine

MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "vocab_size": 65, "dropout": 0.0}
TRAIN = {"batch_size": 12, "grad_accum": 1, "dtype": "auto", "compile": False, "devices": 1, "max_steps": 2000}


def steps_of(run, ms_values, first=1):
    Metric.objects.bulk_create([Metric(run=run, step=first + i, loss=2.0, lr=1e-3, ms=ms, tokens_per_s=1.0,
                                       elapsed=float(i)) for i, ms in enumerate(ms_values)])
    Run.objects.filter(pk=run.pk).update(step=first + len(ms_values) - 1)


def test_a_measured_step_time_wins_and_gives_a_narrow_range():
    t = time_estimate(steps=1000, model_step_s=0.01, measured={"ms": 50.0, "low_ms": 48.0, "high_ms": 53.0,
                                                                "runs": 2})
    assert t["measured"] and t["source"] == "measured" and t["runs"] == 2
    assert t["seconds"] == pytest.approx(50.0)
    # at least the least spread (load changes from run to run) around the median, wider where the steps were
    assert t["low"] == pytest.approx(1000 * 0.050 * 0.85) and t["high"] == pytest.approx(1000 * 0.050 * 1.15)
    wide = time_estimate(steps=10, measured={"ms": 100.0, "low_ms": 60.0, "high_ms": 200.0})
    assert (wide["low"], wide["high"]) == pytest.approx((0.6, 2.0))


def test_without_a_measurement_the_flops_model_gives_a_wide_range():
    t = time_estimate(steps=1000, model_step_s=0.02)
    assert not t["measured"] and t["source"] == "model" and t["runs"] == 0
    assert (t["low"], t["seconds"], t["high"]) == pytest.approx((20 * MODEL_RANGE[0], 20.0, 20 * MODEL_RANGE[1]))
    assert t["high"] / t["low"] > 3  # said plainly to be unsure
    assert time_estimate(steps=1000) is None  # nothing to go on: "speed not measured yet"


def test_the_shape_ignores_dropout_and_run_length_but_not_the_batch():
    key = shape_key(kind="pretrain", model_config=MODEL, train_config=TRAIN)
    assert key == shape_key(kind="pretrain", model_config=MODEL | {"dropout": 0.2},
                            train_config=TRAIN | {"max_steps": 5, "learning_rate": 1.0})
    assert key != shape_key(kind="pretrain", model_config=MODEL, train_config=TRAIN | {"batch_size": 24})
    assert key != shape_key(kind="pretrain", model_config=MODEL | {"n_layer": 6}, train_config=TRAIN)
    assert key != shape_key(kind="sft", model_config=MODEL, train_config=TRAIN)
    sft = {"sft": {"block_size": 64, "lora": {"r": 8, "targets": ["c_proj", "c_attn"]}}}
    assert shape_key(kind="sft", model_config=MODEL, train_config=TRAIN, data=sft) != \
        shape_key(kind="sft", model_config=MODEL, train_config=TRAIN, data={"sft": {"block_size": 64, "lora": None}})
    grpo = {"grpo": {"prompts_per_step": 4, "group_size": 8, "max_new_tokens": 64}, "lora": True, "lora_r": 8}
    assert shape_key(kind="grpo", model_config=MODEL, train_config=grpo) != \
        shape_key(kind="grpo", model_config=MODEL, train_config=grpo | {"grpo": grpo["grpo"] | {"group_size": 4}})


def test_step_times_read_recent_runs_of_the_shape_per_device_skipping_warm_up(user, tiny_corpus, char_tok):
    laptop = {"kind": "cpu", "name": "Laptop CPU", "cores": 2}
    gpu = {"kind": "cuda", "name": "H200"}
    on_laptop = make_run(user, tiny_corpus, char_tok)
    Run.objects.filter(pk=on_laptop.pk).update(device=laptop)
    steps_of(on_laptop, [900.0] * 5 + [40.0, 50.0, 60.0] * 10)  # the first 5 steps are warm-up, skipped
    on_gpu = make_run(user, tiny_corpus, char_tok)
    Run.objects.filter(pk=on_gpu.pk).update(device=gpu)
    steps_of(on_gpu, [5.0] * 20)
    other_shape = make_run(user, tiny_corpus, char_tok, batch_size=8)
    Run.objects.filter(pk=other_shape.pk).update(device=laptop)
    steps_of(other_shape, [999.0] * 20)
    shape = shape_key(kind="pretrain", model_config=on_laptop.model_config, train_config=on_laptop.train_config)
    times = selectors.step_times(shape=shape, kind="pretrain")
    assert set(times) == {"cpu|Laptop CPU|2 cores", "cuda|H200"}
    cpu = times["cpu|Laptop CPU|2 cores"]
    assert (cpu["ms"], cpu["low_ms"], cpu["high_ms"], cpu["runs"], cpu["steps"]) == (50.0, 40.0, 60.0, 1, 30)
    assert times["cuda|H200"]["ms"] == 5.0
    assert selectors.step_times(shape=shape, kind="sft") == {}


def test_worker_times_give_each_worker_its_own_devices_measurement():
    fast = {"name": "train@gpu", "device": {"kind": "cuda", "name": "H200"},
            "profile": DeviceProfile(key="g", peak_flops=1e15, mfu=None)}
    slow = {"name": "train@cpu", "device": {"kind": "cpu", "name": "CPU", "cores": 2}, "profile": None}
    rows = worker_times(workers=[fast, slow], steps=100, step_flops=1.5e12,
                        measured={"cpu|CPU|2 cores": {"ms": 80.0, "low_ms": 70.0, "high_ms": 95.0, "runs": 1}})
    gpu, cpu = rows
    assert gpu["time"]["source"] == "model" and gpu["time"]["per_step_s"] == pytest.approx(1.5e12 / (1e15 * 0.15))
    assert cpu["time"]["measured"] and cpu["time"]["seconds"] == pytest.approx(8.0)
    rows = worker_times(workers=[slow], steps=10, step_seconds={"train@cpu": None})
    assert rows[0]["time"] is None


def test_the_launch_card_estimates_from_a_measured_run_of_the_same_shape(client, user, tiny_corpus, char_tok,
                                                                         redis_clean):
    device = heartbeat(memory=8 * 1024**3)
    device_profile_record(device=device, peak_flops=1e10)
    client.force_login(user)
    html = client.post("/training/estimate/", form_data(tiny_corpus, char_tok)).content.decode()
    assert 'data-source="model"' in html and "a wide range" in html and " – " in html
    form = RunForm(form_data(tiny_corpus, char_tok), user=user)
    assert form.is_valid(), form.errors
    model, train = form.configs()
    done = make_run(user, tiny_corpus, char_tok, model=model, **{k: train[k] for k in ("max_steps",)})
    Run.objects.filter(pk=done.pk).update(device=device, status="succeeded")
    steps_of(done, [30.0] * 40)
    html = client.post("/training/estimate/", form_data(tiny_corpus, char_tok)).content.decode()
    assert 'data-source="measured"' in html and "from 30 ms/step measured by the last run of this shape" in html


def test_the_finetune_page_shows_the_time_on_each_worker(client, user, base, chats, redis_clean):
    device = heartbeat(memory=8 * 1024**3)
    device_profile_record(device=device, peak_flops=1e10)
    form = FinetuneForm(FinetuneForm.initial_for(user=user, base=base.slug), user=user)
    assert form.is_valid(), form.errors
    [row] = form.estimate()["workers"]
    assert row["name"] == "train@box" and row["time"]["source"] == "model"
    client.force_login(user)
    html = client.get(f"/training/finetune/?base={base.slug}").content.decode()
    assert "Time on the train workers" in html and 'data-worker="train@box"' in html and "per step" in html


def test_durations_below_a_second_do_not_read_as_zero():
    from apps.training.templatetags.training import duration, step_time

    assert duration(0.2) == "< 1 s" and duration(0) == "0 s" and duration(95) == "1 min 35 s"
    assert step_time(0.0853) == "85 ms" and step_time(2.5) == "2 s"
