"""Fine-tuning runs: the checks before a run is written (base model, conversation set, tokenizer coverage, LoRA
targets), the form and the page, the command line, and the job itself training a tiny base model in this process
and registering `<base>-sft`, which then loads and answers with ChatML."""


import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from apps.corpora import conversations
from apps.registry.models import Model
from apps.training import finetune
from apps.training.forms_sft import FinetuneForm
from apps.training.models import Run
from apps.training.services import TrainingError
from workers.gpt.config import GPTConfig

from tests.sft_fixtures import CONVS, base, chats, jsonl  # noqa: F401  (fixtures)


def test_lora_target_names_without_torch_match_the_built_model():
    from workers.gpt import sft
    from workers.gpt.model import GPT

    for cfg in (GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=16),
                GPTConfig(vocab_size=64, block_size=8, n_layer=1, n_head=4, n_kv_head=2, n_embd=16, norm="rmsnorm",
                          pos="rope", mlp="swiglu", bias=False, tie_embeddings=False)):
        assert finetune.lora_target_names(cfg) == sft.lora_target_names(GPT(cfg))


def test_the_train_config_matches_the_library_schedule():
    from workers.gpt import sft

    for lora in (False, True):
        assert finetune.finetune_train_config(max_steps=200, lora=lora) == \
            sft.finetune_train_config(max_steps=200, lora=lora).to_dict()


def test_a_plan_adds_chatml_to_a_model_without_a_template(user, base, chats, char_tok):
    plan = finetune.sft_check(user=user, base=base, corpus=chats, max_steps=5)
    assert plan.sft["chatml_added"] and plan.sft["end_of_turn"] == "<|im_end|>"
    assert plan.model_config["vocab_size"] == char_tok.n_vocab + 2
    assert (plan.n_train, plan.n_val) == (9, 3)
    assert plan.train_config["learning_rate"] == 5e-5


def test_it_refuses_another_users_private_base_model(other_user, base, chats):
    with pytest.raises(TrainingError, match="another user's draft") as exc:
        finetune.sft_check(user=other_user, base=base, corpus=chats, max_steps=5)
    assert exc.value.field == "base_model"


def test_it_refuses_a_set_the_char_tokenizer_cannot_encode_naming_the_characters(user, base):
    chinese = conversations.conversations_create(name="zh", owner=user, data=jsonl(
        [[{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]] * 3))
    with pytest.raises(TrainingError, match="no id for '好', '你'") as exc:
        finetune.sft_check(user=user, base=base, corpus=chinese, max_steps=5)
    assert exc.value.field == "corpus"


def test_it_refuses_lora_on_a_module_that_does_not_exist_with_the_list(user, base, chats):
    with pytest.raises(TrainingError, match="'q_proj'.*LoRA can target attn.c_attn, attn.c_proj, c_attn"):
        finetune.sft_check(user=user, base=base, corpus=chats, max_steps=5, lora=True, lora_targets=["q_proj"])


def test_it_refuses_a_block_size_beyond_the_base_models_context(user, base, chats):
    with pytest.raises(TrainingError, match="between 8 and the base model's context \\(64\\)"):
        finetune.sft_check(user=user, base=base, corpus=chats, max_steps=5, block_size=65)


def test_it_refuses_a_text_corpus_as_conversations(user, base, tiny_corpus):
    with pytest.raises(TrainingError, match="not a conversation set"):
        finetune.sft_check(user=user, base=base, corpus=tiny_corpus, max_steps=5)


def test_the_form_puts_the_message_on_the_field_and_writes_nothing(user, base, chats):
    form = FinetuneForm({"base_model": base.slug, "corpus": chats.pk, "method": "lora", "lora_targets": "nope",
                         "max_steps": 5, "batch_size": 2}, user=user)
    assert not form.is_valid()
    assert "LoRA can target" in form.errors["lora_targets"][0]
    assert not Run.objects.filter(kind="sft").exists()


def test_the_form_lists_only_models_the_user_may_use(other_user, base, chats):
    form = FinetuneForm(user=other_user)
    assert base.slug not in [value for value, _ in form.fields["base_model"].widget.choices]


def test_the_page_queues_a_fine_tune(client, user, base, chats):
    client.force_login(user)
    page = client.get(reverse("training:finetune"))
    assert page.status_code == 200 and b"Fine-tune a model" in page.content
    response = client.post(reverse("training:finetune"), {
        "base_model": base.slug, "corpus": chats.pk, "method": "lora", "lora_rank": 4, "lora_alpha": 8,
        "lora_dropout": 0, "lora_targets": "c_attn", "max_steps": 4, "batch_size": 2, "device": "cpu"})
    run = Run.objects.get(kind="sft")
    assert response.status_code == 302 and response["Location"] == reverse("training:run", args=[run.pk])
    assert run.base_model == base and run.corpus == chats
    assert run.data["sft"]["lora"] == {"r": 4, "alpha": 8.0, "dropout": 0.0, "targets": ["c_attn"]}


def test_the_page_answers_400_with_the_message_for_another_users_model(client, other_user, base, chats):
    client.force_login(other_user)
    public = conversations.conversations_create(name="Public chats", data=jsonl(CONVS), builtin=True)
    response = client.post(reverse("training:finetune"), {
        "base_model": base.slug, "corpus": public.pk, "method": "full", "max_steps": 4, "batch_size": 2})
    assert response.status_code == 400 and b"another user&#x27;s draft" in response.content
    assert not Run.objects.filter(kind="sft").exists()


@pytest.mark.django_db(transaction=True)  # the job's helper threads use their own database connections
def test_the_job_fine_tunes_with_lora_and_registers_a_chat_model_that_loads_again(user, base, chats):
    from workers.model_cache import ModelCache, model_spec
    from workers.training import train_run

    plan = finetune.sft_check(user=user, base=base, corpus=chats, max_steps=4, batch_size=2, eval_interval=2,
                              device="cpu", lora=True, lora_targets=["c_attn"], learning_rate=1e-2)
    run = finetune.sft_run_create(owner=user, plan=plan, enqueue=False)
    assert train_run(run.pk, worker="test") == "succeeded"
    run.refresh_from_db()
    model = Model.objects.get(run=run)
    assert model.name == "tiny-sft" and model.base == base and model.tokenizer_spec["chatml"] is True
    assert model.chat_template and model.stop_ids == [base.config["vocab_size"] + 1]  # <|im_end|>
    messages = " ".join(e.message for e in run.events.all())
    assert "cropped from the left" in messages and "Registered as the model tiny-sft" in messages
    assert run.evaluations.exclude(sample="").filter(sample__contains="User: ").exists()
    loaded, _ = ModelCache().get(model_spec(model))
    assert loaded.tokenizer.special_tokens["<|im_end|>"] == model.stop_ids[0]
    assert loaded.model.config.vocab_size == base.config["vocab_size"] + 2
    assert "lora_" not in " ".join(name for name, _ in loaded.model.named_parameters())


@pytest.mark.django_db(transaction=True)
def test_a_second_full_fine_tune_of_the_same_base_gets_a_suffix(user, base, chats):
    from workers.training import train_run

    for _ in range(2):
        plan = finetune.sft_check(user=user, base=base, corpus=chats, max_steps=1, batch_size=2, device="cpu")
        assert train_run(finetune.sft_run_create(owner=user, plan=plan, enqueue=False).pk, worker="t") == "succeeded"
    assert sorted(Model.objects.filter(base=base).values_list("name", flat=True)) == ["tiny-sft", "tiny-sft (2)"]


@pytest.mark.django_db(transaction=True)
def test_the_command_fine_tunes_from_the_command_line(user, base, chats, capsys):
    call_command("finetune", "--base", base.slug, "--data", "Tiny chats", "--steps", "2", "--batch-size", "2",
                 "--device", "cpu", "--user", "ada", "--lora", "--rank", "2", "--targets", "c_attn")
    out = capsys.readouterr().out
    assert "registered" in out.lower() and Model.objects.filter(name="tiny-sft").exists()


def test_the_command_refuses_an_unknown_lora_module(user, base, chats):
    with pytest.raises(CommandError, match="LoRA can target"):
        call_command("finetune", "--base", base.slug, "--data", "Tiny chats", "--steps", "2", "--user", "ada",
                     "--lora", "--targets", "q_proj")
    assert not Run.objects.exists() or not Run.objects.filter(kind="sft").exists()
