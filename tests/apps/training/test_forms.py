"""The submit form: presets, live estimates, and every impossible setting refused with a reason naming the field."""

import math
import time

import pytest

from apps.system.services import worker_record_heartbeat
from apps.training.estimates import estimate
from apps.training.forms import RunForm
from apps.training.models import DeviceProfile, Run
from apps.training.presets import PRESETS, padded_vocab_size
from tests.training_fixtures import form_data
from workers.gpt.config import GPTConfig, TrainConfig, param_count

pytestmark = pytest.mark.django_db


def heartbeat(name="train@box", *, memory, kind="cpu", queues=("train",)):
    device = {"kind": kind, "name": "Test CPU", "cores": 2, "memory_bytes": memory, "torch": "2"}
    worker_record_heartbeat(status={"name": name, "host": "box", "pid": 1, "queues": list(queues), "pool": "solo",
                                    "concurrency": 1, "python": "3.11", "started": time.time(), "tasks": [],
                                    "device": device, "ts": time.time()})
    return device


def errors_of(form) -> dict:
    form.is_valid()
    return {k: " ".join(v) for k, v in form.errors.items()}


def test_the_tiny_settings_are_valid_and_sized(user, tiny_corpus, char_tok, redis_clean):
    form = RunForm(form_data(tiny_corpus, char_tok), user=user)
    assert form.is_valid(), form.errors
    model, train = form.configs()
    assert model["vocab_size"] == char_tok.n_vocab
    assert form.estimate["params"] == param_count(GPTConfig.from_dict(model))
    assert form.estimate["tokens_per_step"] == 4 * 16
    assert form.data_info.exact and form.data_info.val_tokens == tiny_corpus.split["val_chars"]


def test_n_embd_not_divisible_by_n_head_is_refused_on_n_embd(user, tiny_corpus, char_tok, redis_clean):
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, n_embd=100, n_head=3), user=user))
    assert list(errors) == ["n_embd"]
    assert "n_embd (100) must be divisible by n_head (3): try n_embd=96 or 102" in errors["n_embd"]


def test_a_block_size_larger_than_the_validation_split_is_refused_on_block_size(user, tiny_corpus, char_tok,
                                                                                 redis_clean):
    val = tiny_corpus.split["val_chars"]
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, block_size=val + 1), user=user))
    assert list(errors) == ["block_size"]
    assert f"larger than the validation split ({val:,} tokens" in errors["block_size"]


def test_sizes_that_do_not_fit_any_train_worker_are_refused_with_the_memory_needed(user, tiny_corpus, char_tok,
                                                                                    redis_clean):
    heartbeat(memory=64 * 1024**2)  # a train worker with 64 MiB
    heartbeat("infer@big", memory=1024**4, queues=("infer",))  # an infer worker does not count
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, n_layer=12, n_head=12, n_embd=768), user=user))
    assert list(errors) == ["n_embd"]
    for words in ("GiB to train", "train@box", "reduce n_layer or n_embd"):
        assert words in errors["n_embd"]
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, batch_size=4096), user=user))
    assert list(errors) == ["batch_size"] and "reduce batch_size or block_size" in errors["batch_size"]


def test_a_character_tokenizer_of_another_corpus_is_refused(user, tiny_corpus, char_tok, redis_clean):
    from apps.corpora.services import corpus_create

    other = corpus_create(name="Other", owner=user, text="Zebras quietly jump; 42 χ!\n" * 50)
    errors = errors_of(RunForm(form_data(other, char_tok), user=user))
    assert list(errors) == ["tokenizer"] and "has no id for" in errors["tokenizer"]


@pytest.mark.parametrize("changes, field, words", [
    ({"min_lr": 0.1, "learning_rate": 0.01}, "min_lr", "must be <= learning_rate"),
    ({"dropout": 0.95}, "dropout", "less than or equal to 0.9"),
    ({"n_layer": 0}, "n_layer", "greater than or equal to 1"),
    ({"max_steps": "lots"}, "max_steps", "Enter a whole number"),
    ({"learning_rate": ""}, "learning_rate", "required"),
    ({"device": "tpu"}, "device", "Select a valid choice"),
    ({"beta2": 1.0}, "beta2", "less than or equal to 0.9999"),
])
def test_every_bad_value_gets_a_reason_on_its_field(user, tiny_corpus, char_tok, redis_clean, changes, field, words):
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, **changes), user=user))
    assert field in errors and words in errors[field], errors


def test_unknown_or_invisible_corpora_and_tokenizers_are_refused(user, other_user, tiny_corpus, char_tok,
                                                                 redis_clean):
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok), user=other_user))  # ada's upload
    assert "corpus" in errors and "Select a valid choice" in errors["corpus"]
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok) | {"tokenizer": 99999}, user=user))
    assert "tokenizer" in errors


def test_every_preset_is_a_valid_run(user, bundled, builtins, redis_clean):
    from apps.tokenization.services import tokenizer_seed_defaults

    tokenizer_seed_defaults(shakespeare=bundled["Shakespeare"])
    for key, preset in PRESETS.items():
        initial = RunForm.initial_for(preset_key=key, user=user)
        form = RunForm({k: v for k, v in initial.items() if v is not None and v is not False}, user=user)
        assert form.is_valid(), (key, form.errors)
        assert form.cleaned_data["corpus"].name == "Shakespeare"
        model, train = form.configs()
        assert {k: model[k] for k in preset.model} == preset.model
    cpu = RunForm.initial_for(preset_key="shakespeare-char-cpu", user=user)
    assert (cpu["n_layer"], cpu["n_head"], cpu["n_embd"], cpu["block_size"], cpu["batch_size"], cpu["max_steps"],
            cpu["learning_rate"], cpu["dropout"]) == (4, 4, 128, 64, 12, 2000, 1e-3, 0.0)


def test_estimates_count_flops_and_time_from_the_device_profile():
    model = GPTConfig(vocab_size=65, n_layer=4, n_head=4, n_embd=128, block_size=64, bias=False)
    train = TrainConfig(batch_size=12, max_steps=2000, eval_interval=250, eval_iters=20)
    worker = {"name": "train@x", "device": {"kind": "cpu", "memory_bytes": 8 * 1024**3},
              "profile": DeviceProfile(key="k", peak_flops=1e11, mfu=0.5, runs=3)}
    result = estimate(model, train, workers=[worker], train_tokens=1_000_000)
    assert result["tokens_per_step"] == 768
    assert result["flops_per_step"] == result["flops_per_token"] * 768
    assert result["epochs"] == pytest.approx(2000 * 768 / 1e6)
    (on_x,) = result["workers"]
    assert on_x["seconds"] == pytest.approx(result["total_flops"] / 5e10) and on_x["fits"] and on_x["mfu_measured"]
    train_part = result["flops_per_step"] * 2000
    assert train_part < result["total_flops"] < train_part * 1.1  # evaluations add a little


def test_large_vocabularies_are_padded_like_nanogpt():
    assert padded_vocab_size(65) == 65 and padded_vocab_size(50257) == 50304 and padded_vocab_size(1024) == 1024


def test_the_estimate_endpoint_answers_with_reasons_and_never_a_500(client, user, tiny_corpus, char_tok,
                                                                   redis_clean):
    client.force_login(user)
    html = client.post("/training/estimate/", form_data(tiny_corpus, char_tok, n_embd=100, n_head=3)).content.decode()
    assert "Not possible as set" in html and "<code>n_embd</code>" in html and "try n_embd=96 or 102" in html
    response = client.post("/training/estimate/", {"n_layer": "x" * 5000, "corpus": "999", "tokenizer": "<script>"})
    assert response.status_code == 200 and "<script>" not in response.content.decode()
    html = client.post("/training/estimate/", form_data(tiny_corpus, char_tok)).content.decode()
    assert 'data-estimate="params"' in html and "No train worker is online" in html


def test_submitting_the_form_creates_a_queued_run_and_opens_its_dashboard(
        client, user, tiny_corpus, char_tok, redis_clean, django_capture_on_commit_callbacks, monkeypatch):
    from workers import tasks

    sent = []
    monkeypatch.setattr(tasks.run_train, "delay", lambda run_id: sent.append(run_id) or type("R", (), {"id": "t1"}))
    client.force_login(user)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/training/new/", form_data(tiny_corpus, char_tok, name="my first run"))
    run = Run.objects.get()
    assert response.status_code == 302 and response.url == f"/training/runs/{run.pk}/"
    assert run.name == "my first run" and run.status == "queued" and run.owner == user
    assert sent == [run.pk] and Run.objects.get().task_id == "t1"


def test_an_impossible_submission_changes_nothing_and_says_why(client, user, tiny_corpus, char_tok, redis_clean):
    client.force_login(user)
    response = client.post("/training/new/", form_data(tiny_corpus, char_tok, n_embd=100, n_head=3))
    assert response.status_code == 400
    assert "must be divisible by n_head" in response.content.decode()
    assert not Run.objects.exists()


def test_the_form_needs_a_signed_in_user(client):
    response = client.get("/training/new/")
    assert response.status_code == 302 and "/accounts/login/" in response.url
    assert client.post("/training/estimate/", {}).status_code == 302


def test_the_new_run_page_shows_presets_and_their_estimates(client, user, bundled, builtins, redis_clean):
    from apps.tokenization.services import tokenizer_seed_defaults

    tokenizer_seed_defaults(shakespeare=bundled["Shakespeare"])
    client.force_login(user)
    html = client.get("/training/new/?preset=shakespeare-char-baby").content.decode()
    for preset in PRESETS.values():
        assert str(preset.label) in html
    assert 'class="preset active" href="?preset=shakespeare-char-baby"' in html
    assert 'name="n_embd" value="384"' in html and 'data-estimate="params"' in html
    assert "10.7 M" in html  # nanoGPT's baby GPT: 10.65M parameters
    assert math.isclose(PRESETS["shakespeare-char-baby"].reference, 1.47)


def test_the_llama_block_style_sets_rmsnorm_rope_and_swiglu_with_grouped_kv_heads(user, tiny_corpus, char_tok,
                                                                                   redis_clean):
    form = RunForm(form_data(tiny_corpus, char_tok, block="llama", n_kv_head=1), user=user)
    assert form.is_valid(), form.errors
    model, _ = form.configs()
    assert (model["norm"], model["pos"], model["mlp"], model["n_kv_head"]) == ("rmsnorm", "rope", "swiglu", 1)
    form = RunForm(form_data(tiny_corpus, char_tok), user=user)
    assert form.is_valid(), form.errors
    model, _ = form.configs()  # no style given: GPT-2's block, n_kv_head = n_head
    assert (model["norm"], model["pos"], model["mlp"], model["n_kv_head"]) == ("layernorm", "learned", "gelu",
                                                                               model["n_head"])


@pytest.mark.parametrize("changes, field, words", [
    ({"block": "llama", "n_kv_head": 3, "n_head": 2, "n_embd": 32}, "n_kv_head", "must divide n_head (2)"),
    ({"block": "mamba"}, "block", "Select a valid choice"),
    ({"block": "llama", "n_head": 2, "n_embd": 30}, "n_embd", "even head_size"),
    ({"log_interval": 0}, "log_interval", "greater than or equal to 1"),
])
def test_block_style_settings_are_validated_on_their_field(user, tiny_corpus, char_tok, redis_clean, changes, field,
                                                           words):
    errors = errors_of(RunForm(form_data(tiny_corpus, char_tok, **changes), user=user))
    assert field in errors and words in errors[field], errors


def test_the_gpt2_124m_preset_is_llm_c_s_reference_shape(user, bundled, builtins, redis_clean):
    initial = RunForm.initial_for(preset_key="gpt2-124m", user=user)
    form = RunForm({k: v for k, v in initial.items() if v is not None and v is not False}, user=user)
    assert form.is_valid(), form.errors
    model, train = form.configs()
    assert (model["n_layer"], model["n_head"], model["n_embd"], model["block_size"]) == (12, 12, 768, 1024)
    assert model["vocab_size"] == 50304 and form.cleaned_data["tokenizer"].name == "gpt2"
    assert 124e6 < form.estimate["params"] < 125e6  # GPT-2 small with the padded vocabulary, as nanoGPT counts it
    assert initial["block"] == "gpt2" and train["compile"] is True
