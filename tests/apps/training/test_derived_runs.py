"""Promote and fork on the dashboard of a fine-tuning (SFT) or GRPO run take that kind's path: a promoted checkpoint
becomes `<base>-sft` / `<base>-grpo` through the same registration as the end of the run (LoRA merged, ChatML and
the chat template kept, lineage base -> data set -> run), and a fork is a run of the same kind with the same plan,
resumed from the checkpoint. Tiny models, trained in this process."""

import pytest
import torch
from django.urls import reverse

from apps.registry.models import Model
from apps.registry.services import model_promote
from apps.registry.weights import merge_lora_tensors
from apps.training import finetune
from apps.training import grpo as grpo_app
from apps.training.models import Metric, Run
from apps.training.services import TrainingError, run_fork
from tests.grpo_fixtures import *  # noqa: F401,F403  (tiny_model, arithmetic_set)
from tests.sft_fixtures import base, chats, one_thread  # noqa: F401  (fixtures)
from workers.gpt.config import GPTConfig
from workers.training import train_run

BLOCK = 24  # shorter than some of the tiny conversations: those are cropped
GRPO_FAST = dict(steps=2, prompts_per_step=2, group_size=3, max_new_tokens=4, learning_rate=1e-3, flat_steps=0)


@pytest.fixture(autouse=True)
def _no_queue(monkeypatch):
    from workers import tasks

    class Result:
        id = "test-task-id"

    for task in (tasks.run_train, tasks.evaluation_run):
        monkeypatch.setattr(task, "delay", lambda *args: Result())


def _logits(model_row, ids):
    from workers.gpt.checkpoint import load_model

    model = load_model(model_row.file, "cpu").eval()
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]


def _lora_sft_run(user, base, chats, steps=4):
    plan = finetune.sft_check(user=user, base=base, corpus=chats, max_steps=steps, batch_size=2, eval_interval=2,
                              block_size=BLOCK,
                              device="cpu", lora=True, lora_rank=2, lora_alpha=6, lora_targets=["c_attn", "c_fc"],
                              learning_rate=1e-2)
    run = finetune.sft_run_create(owner=user, plan=plan, enqueue=False)
    assert train_run(run.pk, worker="test") == "succeeded"
    run.refresh_from_db()
    return run


def test_merging_lora_without_torch_equals_peft_merge(tmp_path):
    from workers.gpt import sft
    from workers.gpt.checkpoint import load_checkpoint, save_checkpoint
    from workers.gpt.model import GPT

    torch.manual_seed(0)
    model = sft.apply_lora(GPT(GPTConfig(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)),
                           target_modules=["c_attn", "mlp.c_proj"], r=4, alpha=12)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # B starts at zero: give the adapters something to merge
    src = save_checkpoint(tmp_path / "run", model=model, step=3)
    ids = torch.randint(0, 40, (1, 16))
    with torch.no_grad():
        adapted = model.eval()(ids)[0]
    renames = merge_lora_tensors(src, tmp_path / "merged.safetensors", scale=12 / 4,
                                 keep=lambda key: key.startswith("model."))
    assert "model.transformer.h.0.attn.c_attn.base_layer.weight" in renames
    merged = sft.merge_lora(model).state_dict()
    (tmp_path / "merged.json").write_text(src.with_suffix(".json").read_text())
    ours = load_checkpoint(tmp_path / "merged.safetensors", with_optimizer=False).model_state
    assert sorted(ours) == sorted(merged)
    for key, value in merged.items():
        torch.testing.assert_close(ours[key], value, atol=1e-6, rtol=0)
    plain = GPT(model.config)
    plain.load_state_dict(ours)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(ids)[0], adapted, atol=1e-4, rtol=0)


@pytest.mark.django_db(transaction=True)
def test_promoting_an_sft_checkpoint_registers_base_sft_like_the_end_of_the_run(client, user, base, chats):
    from apps.corpora.conversations import conversation_format, conversations_load
    from apps.registry.selectors import model_tokenizer
    from workers.gpt.conversations import render_conversation

    run = _lora_sft_run(user, base, chats)
    # conversations longer than the context are cropped, not refused: the timeline says so and counts them
    tok, template, eot = conversation_format(tokenizer=model_tokenizer(base), chat_template=base.chat_template)
    long = sum(len(render_conversation(c, tok, template, eot).ids) > BLOCK + 1 for c in sum(conversations_load(
        corpus=chats), []))
    assert long > 0 and run.events.filter(
        message__contains=f"; {long} conversation(s) longer than {BLOCK} tokens were cropped from the left").exists()
    automatic = Model.objects.get(run=run)
    checkpoint = run.checkpoints.get(step=4)
    client.force_login(user)
    response = client.post(reverse("registry:promote", args=[checkpoint.pk]))
    promoted = Model.objects.filter(run=run).exclude(pk=automatic.pk).get()
    assert response.status_code == 302 and response["Location"] == reverse("registry:detail", args=[promoted.slug])
    assert promoted.name == "tiny-sft (2)" and promoted.base == base and promoted.owner == user
    assert promoted.lineage["base_model"] == "tiny" and promoted.lineage["corpus"] == "Tiny chats"
    assert promoted.lineage["run_id"] == run.pk and promoted.lineage["step"] == 4
    for field in ("tokenizer_spec", "chat_template", "stop_ids", "config"):
        assert getattr(promoted, field) == getattr(automatic, field), field
    assert promoted.tokenizer_spec["chatml"] is True and "<|im_start|>" in promoted.chat_template
    ids = list(range(10))
    torch.testing.assert_close(_logits(promoted, ids), _logits(automatic, ids), atol=1e-5, rtol=0)


@pytest.mark.django_db(transaction=True)
def test_forking_an_sft_checkpoint_fine_tunes_on_with_the_same_plan(client, user, base, chats):
    parent = _lora_sft_run(user, base, chats)
    checkpoint = parent.checkpoints.get(step=4)
    client.force_login(user)
    page = client.get(reverse("training:fork", args=[checkpoint.pk]))
    assert page.status_code == 200 and b'name="min_lr"' in page.content
    response = client.post(reverse("training:fork", args=[checkpoint.pk]),
                           {"max_steps": 6, "learning_rate": 5e-3, "min_lr": 0, "warmup_steps": 1})
    child = Run.objects.exclude(pk=parent.pk).get(parent=parent)
    assert response.status_code == 302
    assert (child.kind, child.base_model, child.corpus) == ("sft", base, chats)
    assert child.data["sft"] == parent.data["sft"] and child.model_config == parent.model_config
    assert child.train_config["max_steps"] == 6 and child.train_config["learning_rate"] == 5e-3
    assert train_run(child.pk, worker="test") == "succeeded"
    child.refresh_from_db()
    assert child.step == 6 and list(Metric.objects.filter(run=child).values_list("step", flat=True)) == [1, 2, 3, 4,
                                                                                                          5, 6]
    assert child.events.filter(message="Training continues from the checkpoint at step 4.").exists()
    made = Model.objects.get(run=child)
    assert made.base == base and made.name == "tiny-sft (2)" and made.lineage["step"] == 6


@pytest.mark.django_db(transaction=True)
def test_promoting_a_grpo_checkpoint_registers_base_grpo_with_lora_merged(user, tiny_model, arithmetic_set):
    run = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set, grpo_config=GRPO_FAST,
                                   lora=True, lora_r=2, enqueue=False)
    assert train_run(run.pk, worker="test") == "succeeded"
    run.refresh_from_db()
    automatic = Model.objects.get(run=run)
    promoted = model_promote(checkpoint=run.checkpoints.get(step=2), user=user)
    assert promoted.name == "tiny-chat-grpo (2)" and promoted.base == tiny_model
    assert promoted.lineage["kind"] == "grpo" and promoted.lineage["corpus"] == "Sums"
    assert promoted.stop_ids == tiny_model.stop_ids and promoted.tokenizer_spec == tiny_model.tokenizer_spec
    ids = list(range(12))
    torch.testing.assert_close(_logits(promoted, ids), _logits(automatic, ids), atol=1e-5, rtol=0)


@pytest.mark.django_db(transaction=True)
def test_forking_a_grpo_run_continues_grpo_from_the_checkpoint(client, user, tiny_model, arithmetic_set):
    parent = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set,
                                      grpo_config=GRPO_FAST, lora=False, enqueue=False)
    assert train_run(parent.pk, worker="test") == "succeeded"
    parent.refresh_from_db()
    checkpoint = parent.checkpoints.get(step=2)
    client.force_login(user)
    page = client.get(reverse("training:fork", args=[checkpoint.pk]))
    assert page.status_code == 200 and b'name="min_lr"' not in page.content  # constant lr after warmup
    response = client.post(reverse("training:fork", args=[checkpoint.pk]),
                           {"max_steps": 4, "learning_rate": 5e-4, "warmup_steps": 0})
    assert response.status_code == 302
    child = Run.objects.get(parent=parent)
    assert (child.kind, child.base_model, child.corpus) == ("grpo", tiny_model, arithmetic_set)
    assert child.train_config["grpo"]["steps"] == 4 and child.train_config["grpo"]["learning_rate"] == 5e-4
    assert child.train_config["grpo"]["group_size"] == 3 and child.train_config["lora"] is False
    assert child.data["heldout"] == {"before": parent.data["heldout"]["before"]}  # same base: same "before"
    assert train_run(child.pk, worker="test") == "succeeded"
    child.refresh_from_db()
    assert child.step == 4 and [m.step for m in Metric.objects.filter(run=child)] == [1, 2, 3, 4]
    assert child.events.filter(message="Training continues from the checkpoint at step 2.").exists()
    assert Model.objects.get(run=child).name == "tiny-chat-grpo (2)"
    assert child.data["heldout"]["after"] != parent.data["heldout"]["after"]


def test_a_grpo_fork_refuses_min_lr_and_a_group_of_one(user, tiny_model, arithmetic_set):
    from apps.training.models import Checkpoint
    from workers.gpt.config import ConfigError

    parent = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set,
                                      grpo_config=GRPO_FAST, lora=False, enqueue=False)
    checkpoint = Checkpoint.objects.create(run=parent, step=1, path="runs/x/ckpt.safetensors")
    with pytest.raises(TrainingError, match="not min_lr"):
        run_fork(checkpoint=checkpoint, user=user, changes={"min_lr": 0.0})
    with pytest.raises(TrainingError, match="must be more than the checkpoint's step"):
        run_fork(checkpoint=checkpoint, user=user, changes={"max_steps": 1})
    with pytest.raises(ConfigError):
        run_fork(checkpoint=checkpoint, user=user, changes={"learning_rate": -1.0})
    assert not Run.objects.filter(parent=parent).exists()


def test_promoting_a_checkpoint_of_a_fine_tune_whose_base_model_was_deleted_says_why(client, user, base, chats,
                                                                                     char_tok):
    from apps.system import files
    from apps.training.models import Checkpoint
    from workers.gpt.checkpoint import save_checkpoint
    from workers.gpt.model import GPT

    plan = finetune.sft_check(user=user, base=base, corpus=chats, max_steps=2, batch_size=2, device="cpu")
    run = finetune.sft_run_create(owner=user, plan=plan, enqueue=False)
    path = save_checkpoint(run.directory, model=GPT(GPTConfig.from_dict(run.model_config)), step=1)
    checkpoint = Checkpoint.objects.create(run=run, step=1, path=files.artifact_relative(path), size_bytes=1)
    Run.objects.filter(pk=run.pk).update(base_model=None)
    before = set(Model.objects.values_list("pk", flat=True))
    client.force_login(user)
    try:
        response = client.post(reverse("registry:promote", args=[checkpoint.pk]), follow=True)
    finally:
        files.remove(run.directory)  # a rolled-back run's id is reused by the next test's run
    assert response.status_code == 200 and "was deleted, so its tokenizer and chat template are unknown" in \
        response.content.decode()
    assert set(Model.objects.values_list("pk", flat=True)) == before
    assert not [p for p in files.artifact_path("models").iterdir() if p.name.startswith(".")]  # no temp left


@pytest.mark.django_db(transaction=True)
def test_grpo_on_an_imported_chat_model_registers_and_promotes_models_that_carry_its_tokenizer(tmp_path, user):
    """Like SmolLM2: a model imported with its own byte-level BPE and ChatML. Its tokenizer's files travel with
    every model derived from it (the end of the run and a promoted checkpoint alike)."""
    from tests.apps.evals.conftest import make_tasks_corpus
    from tests.apps.registry.factories import make_model
    from workers.model_cache import ModelCache, model_spec

    chat = make_model(tmp_path, name="Tiny", ctx=128)
    tasks = make_tasks_corpus(user)
    run = grpo_app.grpo_run_create(owner=user, base_model=chat, corpus=tasks, lora=True, lora_r=2, enqueue=False,
                                   grpo_config=GRPO_FAST | {"prompts_per_step": 1})
    assert train_run(run.pk, worker="test") == "succeeded", Run.objects.get(pk=run.pk).reason
    run.refresh_from_db()
    made = [Model.objects.get(run=run), model_promote(checkpoint=run.checkpoints.get(step=2), user=user)]
    assert [m.name for m in made] == ["Tiny-grpo", "Tiny-grpo (2)"]
    want = ModelCache().get(model_spec(chat))[0].tokenizer.encode("2+2=")
    for model in made:
        assert model.tokenizer_spec["kind"] == "imported" and (model.directory / "tokenizer").is_dir()
        assert model.chat_template == chat.chat_template and model.stop_ids == chat.stop_ids
        loaded, _ = ModelCache().get(model_spec(model))
        assert loaded.tokenizer.encode("2+2=") == want
