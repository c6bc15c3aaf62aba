"""Fine-tuning runs (Run.kind "sft"): a registry model trained further on a conversation set, loss on the assistant's
tokens only. Everything a fine-tune needs is checked here, before a row is written, so a refused request leaves
nothing behind and its message names the field and the fix: the base model (one the user may use), the set (a
conversation set the base model's tokenizer can encode), LoRA's targets (Linears the architecture has), the context.

What the worker (workers/finetune.py) needs beyond the two configs lives in run.data["sft"]: the base model, full or
LoRA and LoRA's settings, the block size conversations are cropped to, and the chat format (the model's own
template, or ChatML added to its tokenizer). run.model_config is the base model's config with the vocabulary grown
by ChatML's two tokens when it is added, so a checkpoint of the run is exactly the model being trained.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from apps.corpora.conversations import conversation_format, conversations_load, conversations_missing_chars
from apps.corpora.models import Corpus
from apps.corpora.text import CorpusInputError
from apps.registry.models import Model
from apps.registry.selectors import model_tokenizer
from apps.training.models import Run
from apps.training.services import TrainingError, enqueue_on_commit, note
from workers.gpt import conversations as convlib
from workers.gpt.chat import ChatTemplateError
from workers.gpt.config import ConfigError, GPTConfig, TrainConfig
from workers.gpt.tokenizers import TokenizerError

DEFAULT_LR = {"full": 5e-5, "lora": 1e-3}  # sft.DEFAULT_LR (that module needs torch): LoRA trains far fewer weights
DEFAULT_TARGETS = ("c_attn", "c_proj")
WARMUP_FRACTION = 0.05  # sft.finetune_train_config's: a short linear warmup, then cosine decay to zero


def lora_target_names(cfg: GPTConfig) -> list[str]:
    """The names LoRA may target in a model of this config, as sft.lora_target_names finds them in the built model
    (each Linear by its last name and its last two); without torch. lm_head is listed even when it is tied to the
    embedding, as the library lists it; sft_check then refuses it, as sft.apply_lora does. A test checks both agree."""
    attn = ["c_attn", "c_proj"]
    mlp = ["c_fc", "c_proj"] + (["c_gate"] if cfg.mlp == "swiglu" else [])
    return sorted(set(attn) | set(mlp) | {f"attn.{n}" for n in attn} | {f"mlp.{n}" for n in mlp} | {"lm_head"})


def finetune_train_config(*, max_steps: int, lora: bool, learning_rate: float | None = None, **overrides) -> dict:
    """The TrainConfig dict of a fine-tune, as workers.gpt.sft.finetune_train_config makes it (tested equal)."""
    if learning_rate is None:
        learning_rate = DEFAULT_LR["lora" if lora else "full"]
    warmup = max(1, math.ceil(max_steps * WARMUP_FRACTION))
    fields = dict(max_steps=max_steps, learning_rate=learning_rate, warmup_steps=min(warmup, max_steps),
                  lr_decay_steps=max_steps, min_lr=0.0, weight_decay=0.0 if lora else 0.01)
    fields.update(overrides)
    return TrainConfig(**fields).to_dict()


@dataclass
class SFTPlan:
    """A checked fine-tuning request: what sft_run_create writes."""
    base: Model
    corpus: Corpus
    model_config: dict
    train_config: dict
    sft: dict
    n_train: int
    n_val: int


def base_model_choices(*, user):
    """Registry models the user may fine-tune: published ones and their own (staff: all), not archived."""
    return Model.objects.usable_by(user).order_by("name")


def conversation_set_choices(*, user):
    return Corpus.objects.visible_to(user).filter(kind=Corpus.Kind.CONVERSATIONS)


def sft_check(*, user, base: Model, corpus: Corpus, max_steps: int, batch_size: int = 8, block_size: int | None = None,
              learning_rate: float | None = None, eval_interval: int | None = None, lora: bool = False,
              lora_rank: int = 8, lora_alpha: float = 16.0, lora_dropout: float = 0.0,
              lora_targets: list[str] | None = None, device: str = "auto", seed: int = 1337) -> SFTPlan:
    """Check a fine-tuning request; TrainingError (with the form field) for anything that would fail later."""
    if not Model.objects.usable_by(user).filter(pk=base.pk).exists():
        raise TrainingError(_("The model %(name)s is another user's draft (or archived): fine-tune a published model "
                              "or one of your own.") % {"name": base.name}, field="base_model")
    if corpus.kind != Corpus.Kind.CONVERSATIONS or not Corpus.objects.visible_to(user).filter(pk=corpus.pk).exists():
        raise TrainingError(_("%(name)s is not a conversation set you can use: pick one of kind conversations on the "
                              "Data page.") % {"name": corpus.name}, field="corpus")
    cfg = GPTConfig.from_dict(dict(base.config))
    block_size = block_size or cfg.block_size
    if not 8 <= block_size <= cfg.block_size:
        raise TrainingError(_("block_size (%(b)s) must be between 8 and the base model's context (%(max)s).")
                            % {"b": block_size, "max": cfg.block_size}, field="block_size")
    try:
        train, val = conversations_load(corpus=corpus)
        tokenizer = model_tokenizer(base)
    except (CorpusInputError, TokenizerError) as exc:
        raise TrainingError(str(exc), field="corpus") from None
    if not val:
        raise TrainingError(_("%(name)s has no validation conversations: upload at least two conversations.")
                            % {"name": corpus.name}, field="corpus")
    missing = conversations_missing_chars(convs=train + val, tokenizer=tokenizer)
    if missing:
        raise TrainingError(_("%(model)s's character tokenizer cannot encode %(set)s: it has no id for %(chars)s. "
                              "Pick a conversation set written in its characters (the char-safe set for the "
                              "Shakespeare model), or a model with a byte-level tokenizer.")
                            % {"model": base.name, "set": corpus.name, "chars": ", ".join(repr(c) for c in missing)},
                            field="corpus")
    try:
        tok, template, eot = conversation_format(tokenizer=tokenizer, chat_template=base.chat_template)
        convlib.render_conversation(val[0], tok, template, eot)
    except (ChatTemplateError, TokenizerError, ValueError) as exc:
        raise TrainingError(_("%(model)s cannot render %(set)s through its chat template: %(why)s")
                            % {"model": base.name, "set": corpus.name, "why": exc}, field="corpus") from None
    chatml_added = isinstance(tok, convlib.ChatMLTokenizer)
    model_cfg = cfg.to_dict() | {"vocab_size": max(cfg.vocab_size, tok.n_vocab)}
    lora_cfg = None
    if lora:
        known = lora_target_names(cfg)
        targets = [t.strip() for t in (lora_targets or DEFAULT_TARGETS) if t.strip()]
        unknown = [t for t in targets if t not in known]
        if not targets or unknown:
            raise TrainingError(_("No Linear module named %(names)s in %(model)s: LoRA can target %(known)s.")
                                % {"names": ", ".join(repr(t) for t in unknown) or "(none)", "model": base.name,
                                   "known": ", ".join(known)}, field="lora_targets")
        if "lm_head" in targets and cfg.tie_embeddings:
            raise TrainingError(_("lm_head shares its weight with the token embedding (tied): merging an adapter "
                                  "into it would change the embedding too; target the blocks' Linears instead, e.g. "
                                  "c_attn, c_proj, c_fc."), field="lora_targets")
        if lora_rank < 1 or lora_alpha <= 0 or not 0.0 <= lora_dropout < 1.0:
            raise TrainingError(_("LoRA needs rank >= 1, alpha > 0 and dropout in [0, 1): try rank 8, alpha 16, "
                                  "dropout 0."), field="lora_rank")
        lora_cfg = {"r": lora_rank, "alpha": lora_alpha, "dropout": lora_dropout, "targets": targets}
    try:
        train_config = finetune_train_config(
            max_steps=max_steps, lora=lora, learning_rate=learning_rate, batch_size=batch_size,
            eval_interval=eval_interval or max(1, max_steps // 10), eval_iters=min(20, max(1, len(val) // batch_size)),
            checkpoint_interval=0, keep_last=2, device=device, seed=seed)
        GPTConfig.from_dict(dict(model_cfg))
    except ConfigError as exc:
        raise TrainingError(str(exc), field=getattr(exc, "field", None)) from None
    sft = {"base_model": base.slug, "base_model_id": base.pk, "block_size": block_size, "lora": lora_cfg,
           "chat_template": template if chatml_added or not base.chat_template else "",
           "chatml_added": chatml_added, "end_of_turn": eot}
    return SFTPlan(base=base, corpus=corpus, model_config=model_cfg, train_config=train_config, sft=sft,
                   n_train=len(train), n_val=len(val))


def sft_model_format(*, base: Model) -> dict:
    """How the model a fine-tune of `base` makes reads and ends text: {"tokenizer_spec", "chat_template",
    "stop_ids"} for model_register_derived. The base model's own template and stop ids, or ChatML: the spec marked
    "chatml" (every loader adds its two tokens again, with the same ids) and <|im_end|> as the stop id. The worker's
    registration at the end of a run and a promoted checkpoint both use this, so the two models are alike."""
    tok, template, eot = conversation_format(tokenizer=model_tokenizer(base), chat_template=base.chat_template)
    spec = dict(base.tokenizer_spec or {})
    chatml_added = isinstance(tok, convlib.ChatMLTokenizer)
    if chatml_added:
        spec["chatml"] = True
    eot_id = tok.special_tokens.get(eot)
    return {"tokenizer_spec": spec, "chat_template": template if (chatml_added or base.chat_template) else "",
            "stop_ids": [eot_id] if eot_id is not None else list(base.stop_ids or [])}


def sft_run_create(*, owner, plan: SFTPlan, name: str = "", enqueue: bool = True) -> Run:
    """A queued fine-tuning run from a checked plan (sft_check)."""
    base, corpus = plan.base, plan.corpus
    how = f"LoRA r={plan.sft['lora']['r']}" if plan.sft["lora"] else "full"
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner, kind=Run.Kind.SFT, base_model=base,
            name=(name or "").strip()[:100] or f"{base.name} · sft ({how})"[:100],
            corpus=corpus, tokenizer=base.tokenizer,
            data={"corpus": corpus.name, "tokenizer": base.tokenizer.name if base.tokenizer else
                  (base.tokenizer_spec or {}).get("name", ""), "base_model": base.name,
                  "n_train": plan.n_train, "n_val": plan.n_val, "sft": plan.sft},
            model_config=plan.model_config, train_config=plan.train_config, queued=timezone.now())
        note(run, gettext_noop("Queued by %(user)s: fine-tune %(base)s on %(set)s (%(how)s, %(n)s training "
                               "conversations)."),
             {"user": owner.get_username(), "base": base.name, "set": corpus.name, "how": how, "n": plan.n_train})
        if enqueue:
            enqueue_on_commit(run.pk)
    return run
