"""Fine-tuning benchmarks (run by `make bench`, not by `make test`).

1. Format learned: the Shakespeare character model of the "Shakespeare char, CPU" preset (but block_size 256: at 64
   nearly every bundled conversation would be cropped), pretrained here, then fine-tuned on the char-safe bundled
   conversation set through the real job (workers/finetune.py) for at most 10 minutes of training on the CPU. Measured:
   the share of greedy answers to held-out prompts that end with the end-of-turn token <|im_end|>, before (the base
   model with ChatML's fresh rows: about 0 %) and after (target >= 90 %).
2. LoRA speed: SmolLM2-135M-Instruct with LoRA on c_attn/c_proj, tokens/s of train() (the product's loop) against a
   plain PyTorch + peft loop on the same model and the same batches (target >= 0.9x); peak memory printed.
"""

import itertools
import resource
import time

import pytest

from apps.corpora.conversations import conversations_load, conversations_seed_defaults
from apps.registry.services import model_import_file, model_promote
from apps.training import finetune, services
from apps.training.forms import RunForm
from tests.data_fixtures import *  # noqa: F401,F403
from tests.smollm2 import smollm2_gguf  # noqa: F401  (fixture)
from tests.training_fixtures import *  # noqa: F401,F403

pytestmark = [pytest.mark.django_db(transaction=True)]

TARGET_EOT = 0.90
N_HELDOUT = 100
SFT_SECONDS = 600
TARGET_SPEED = 0.9


def ends_with_eot(model, tokenizer, template, convs, eot_id) -> float:
    """Share of held-out prompts whose greedy answer ends with the end-of-turn token within 120 tokens."""
    from workers.finetune import _prompt
    from workers.gpt.generate import generate

    ended = 0
    for c in convs:
        _, ids = _prompt(c, tokenizer, template)
        out = [t.id for t in generate(model, ids, max_new_tokens=120, temperature=0.0, stop_ids=[eot_id])]
        ended += bool(out) and out[-1] == eot_id
    return ended / len(convs)


def test_the_char_model_learns_to_end_its_turn(user, shakespeare, settings):
    from workers.gpt import checkpoint, sft
    from workers.gpt import conversations as convlib
    from workers.training import train_run

    corpus, tokenizer, _ = shakespeare
    initial = RunForm.initial_for(preset_key="shakespeare-char-cpu", user=user) | {"block_size": 256}
    form = RunForm({k: v for k, v in initial.items() if v is not None and v is not False}, user=user)
    assert form.is_valid(), form.errors
    model_cfg, train_cfg = form.configs()
    started = time.monotonic()
    pre = services.run_create(owner=user, corpus=corpus, tokenizer=tokenizer, model_config=model_cfg,
                              train_config=train_cfg, name="sft benchmark base", enqueue=False)
    assert train_run(pre.pk, worker="bench") == "succeeded"
    pre.refresh_from_db()
    pretrain_min = (time.monotonic() - started) / 60
    base = model_promote(checkpoint=pre.checkpoints.order_by("-step").first(), user=user, name="shakespeare-256")

    chars = next(c for c in conversations_seed_defaults() if "char" in c.name)
    _, val = conversations_load(corpus=chars)
    heldout = val[:N_HELDOUT]
    from apps.registry.selectors import model_tokenizer

    tok, template, eot = convlib.chat_format(model_tokenizer(base), None)
    eot_id = tok.special_tokens[eot]
    before_model = checkpoint.load_model(base.file)
    sft.grow_embeddings(before_model, tok)
    before = ends_with_eot(before_model, tok, template, heldout, eot_id)

    settings.TRAINING_MAX_SECONDS = SFT_SECONDS  # the run stops (and fails) past it: the budget is a hard limit
    plan = finetune.sft_check(user=user, base=base, corpus=chars, max_steps=1500, batch_size=16, learning_rate=3e-4,
                              eval_interval=250, device="cpu")
    run = finetune.sft_run_create(owner=user, plan=plan, enqueue=False)
    outcome = train_run(run.pk, worker="bench")
    run.refresh_from_db()
    assert run.status == "succeeded", f"{outcome}: {run.reason}"
    tuned = run.models.get()
    after_model = checkpoint.load_model(tuned.file)
    after = ends_with_eot(after_model, model_tokenizer(tuned), tuned.chat_template, heldout, tuned.stop_ids[0])
    crops = next((e.message for e in run.events.all() if "cropped" in e.message), "")
    print(f"\nShakespeare char base (CPU preset, block_size 256): pretrained {pre.step} steps in {pretrain_min:.1f} min,"
          f" val loss {pre.val_loss:.3f}")
    print(f"  fine-tuned on {chars.name}: {run.step} steps in {run.elapsed_seconds / 60:.1f} min, val loss "
          f"{run.val_loss:.3f}; {crops}")
    print(f"  held-out answers ending with {eot}: before {before:.0%}, after {after:.0%} (target >= "
          f"{TARGET_EOT:.0%}: {'ok' if after >= TARGET_EOT else 'MISSED'}) over {len(heldout)} prompts")
    assert run.elapsed_seconds <= SFT_SECONDS
    assert after >= TARGET_EOT


def test_smollm2_lora_trains_as_fast_as_a_plain_peft_loop(user, smollm2_gguf):  # noqa: F811
    import torch

    from apps.registry.models import Model
    from apps.registry.selectors import model_tokenizer
    from workers.gpt import checkpoint, sft
    from workers.gpt import conversations as convlib
    from workers.gpt.train import train

    model_row = model_import_file(source=smollm2_gguf, name="SmolLM2-135M-Instruct", status=Model.Status.PUBLISHED)
    general = next(c for c in conversations_seed_defaults() if "general" in c.name)
    train_convs, val_convs = conversations_load(corpus=general)
    tok, template, eot = convlib.chat_format(model_tokenizer(model_row), model_row.chat_template)
    batches = sft.ConversationBatches.build(train=train_convs[:512], val=val_convs[:64], tokenizer=tok,
                                            template=template, end_of_turn=eot, block_size=256, batch_size=8)
    steps, targets = 20, ["c_attn", "c_proj"]
    fixed = [batches("train", torch.Generator().manual_seed(i)) for i in range(steps)]  # the same batches for both
    n_tokens = sum(int(x.numel()) for x, _ in fixed)

    def fresh():
        model = checkpoint.load_model(model_row.file)
        model.train()
        return sft.apply_lora(model, target_modules=targets, r=8, alpha=16)

    def plain_loop():
        model = fresh()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
        t0 = time.perf_counter()
        for x, y in fixed:
            _, loss = model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return n_tokens / (time.perf_counter() - t0)

    def ours():
        model = fresh()
        it = itertools.cycle(fixed)  # train() also draws a few batches to check ids and to evaluate
        cfg = sft.finetune_train_config(max_steps=steps, lora=True, batch_size=8, eval_interval=10 ** 6,
                                        eval_iters=1, device="cpu")
        ms = []  # train()'s own step times (on the CPU it reports every step), evaluations excluded
        train(model.config, cfg, model=model, batch_fn=lambda split, g: next(it) if split == "train" else fixed[0],
              on_step=lambda r: ms.append(r["ms"]))
        assert len(ms) == steps
        return n_tokens / (sum(ms) / 1000)  # its tokens_per_s counts block_size tokens a row; rows here are padded

    reference, product = plain_loop(), ours()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = product / reference
    print(f"\nSmolLM2-135M LoRA r=8 on {', '.join(targets)}, batch 8, {steps} steps on CPU: train() "
          f"{product:,.0f} tokens/s, plain peft loop {reference:,.0f} tokens/s: {ratio:.2f}x (target >= "
          f"{TARGET_SPEED}); peak memory {peak_mb:,.0f} MB")
    assert ratio >= TARGET_SPEED
