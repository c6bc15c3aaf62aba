"""
Supervised fine-tuning (SFT): what turns a base model into an assistant, after nanochat's chat_sft and TRL's
SFTTrainer with assistant-only loss.

The pieces, each small and separately tested; train.py's loop does the optimizing:

    tok, template, eot = conversations.chat_format(tokenizer, chat_template)   # ChatML when the model has none
    grow_embeddings(model, tok)                       # rows for added special tokens, initialised to the mean
    batches = ConversationBatches.build(train=train_convs, val=val_convs, tokenizer=tok, template=template,
                                        end_of_turn=eot, block_size=model.config.block_size, batch_size=8)
    model = apply_lora(model, target_modules=["c_attn"], r=8, alpha=16)   # optional; full fine-tuning otherwise
    train(..., model=model, batch_fn=batches, train_cfg=finetune_train_config(max_steps=300, lora=True))
    merge_lora(model)                                 # plain weights again, saved like any GPT

Loss only on assistant tokens: a conversation's targets are its next tokens where the mask (see
conversations.render_conversation) is 1 and -1 elsewhere, which GPT.forward's cross-entropy ignores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .config import TrainConfig
from .conversations import Rendered, render_conversation
from .model import GPT
from .tokenizers import Tokenizer

# ----------------------------------------------------------------------------------------------------------------------
# Added special tokens: grow the embedding


@torch.no_grad()
def grow_embeddings(model: GPT, tokenizer: Tokenizer, new_ids=None) -> list[int]:
    """Give `model` an embedding row (and output row) for every id of `tokenizer`; returns the ids initialised.

    The new rows, and rows of ids in new_ids (default: the ids a ChatMLTokenizer added) that already exist, e.g. in
    GPT-2's padding up to 50304, are set to the mean of the embedding rows of the base tokenizer's ids. A new token
    then starts as "an average token" (Hewitt 2021, "Initializing New Word Embeddings for Pretrained Language
    Models"): its logit is about the mean logit, so the model's distribution over the old tokens barely moves, where
    a random row could make it predict the new token everywhere or nowhere. With tied embeddings (GPT-2, our
    default) wte and lm_head are one tensor, grown once and tied again; an untied lm_head grows by the mean of its
    own rows. model.config.vocab_size is updated so the checkpoint records the new size.
    """
    added = getattr(tokenizer, "added", {})
    new_ids = sorted(added.values()) if new_ids is None else sorted(new_ids)
    old_n = model.config.vocab_size
    n = max(old_n, tokenizer.n_vocab)
    if not new_ids and n == old_n:
        return []
    base_n = min(new_ids) if new_ids else old_n  # rows below it belong to tokens that were trained
    wte = model.transformer.wte
    tied = model.lm_head.weight is wte.weight

    def grown(weight: torch.Tensor) -> torch.Tensor:
        out = torch.empty(n, weight.size(1), dtype=weight.dtype, device=weight.device)
        out[:old_n] = weight
        mean = weight[:base_n].mean(dim=0)
        for i in set(new_ids) | set(range(old_n, n)):
            out[i] = mean
        return out

    new_wte = nn.Embedding(n, wte.embedding_dim, device=wte.weight.device, dtype=wte.weight.dtype)
    new_wte.weight.copy_(grown(wte.weight))
    new_wte.weight.requires_grad_(wte.weight.requires_grad)
    model.transformer.wte = new_wte
    if tied:
        model.lm_head = nn.Linear(wte.embedding_dim, n, bias=False, device=wte.weight.device, dtype=wte.weight.dtype)
        model.lm_head.weight = new_wte.weight
    else:
        head = model.lm_head
        new_head = nn.Linear(head.in_features, n, bias=False, device=head.weight.device, dtype=head.weight.dtype)
        new_head.weight.copy_(grown(head.weight))
        new_head.weight.requires_grad_(head.weight.requires_grad)
        model.lm_head = new_head
    model.config.vocab_size = n
    return sorted(set(new_ids) | set(range(old_n, n)))


# ----------------------------------------------------------------------------------------------------------------------
# Batches


@dataclass
class ConversationBatches:
    """batch_fn(split, generator) -> (x, y) for train(): PADDED batches of whole conversations.

    Why padded rather than packed: every row holds one conversation, so no token ever attends to another
    conversation (packing would need a block-diagonal attention mask, which our SDPA is_causal path does not take,
    or let conversations leak into each other as nanochat's midtraining accepts), and a row's loss is exactly that
    conversation's assistant tokens. Rows are padded only to the longest conversation of the batch (rounded up to a
    multiple of 8), not to block_size, which keeps most of packing's efficiency for short chat data.

    A conversation longer than block_size + 1 tokens is CROPPED FROM THE LEFT to its last block_size + 1 tokens:
    what is kept is the end, with the final assistant answer and its end-of-turn token, which is what the model must
    learn to produce and what generation sees (generate() slides its window the same way). Cropping from the right
    would teach the model never to end its turn. n_cropped counts them per split, to report; a conversation left
    with no trained token would be dropped and counted in n_dropped (it cannot happen with a whole final turn, but
    is checked).

    x is (B, T) token ids, y is (B, T) next-token targets with -1 on masked positions and padding.
    """
    rows: dict[str, list[Rendered]]
    batch_size: int
    block_size: int
    pad_id: int = 0
    device: str = "cpu"
    n_cropped: dict[str, int] = field(default_factory=dict)
    n_dropped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def build(cls, *, train: list[list[dict]], val: list[list[dict]] | None = None, tokenizer: Tokenizer,
              template: str, end_of_turn: str, block_size: int, batch_size: int, device: str = "cpu",
              bos_token: str = "", eos_token: str = "") -> ConversationBatches:
        """Render every conversation (ConversationError-free lists of messages, see conversations.parse_jsonl),
        crop the long ones, and hold them for sampling. A conversation the tokenizer or the template cannot handle
        raises ValueError naming its index in the split."""
        rows, n_cropped, n_dropped = {}, {}, {}
        for split, convs in (("train", train), ("val", val)):
            if convs is None:
                continue
            out, cropped, dropped = [], 0, 0
            for i, messages in enumerate(convs):
                if not any(m["role"] == "assistant" for m in messages):
                    raise ValueError(f"{split} conversation {i} has no assistant message: there is nothing to train "
                                     f"on; validate the data with conversations.parse_jsonl")
                try:
                    r = render_conversation(messages, tokenizer, template, end_of_turn, bos_token=bos_token,
                                            eos_token=eos_token)
                except ValueError as e:
                    raise ValueError(f"{split} conversation {i}: {e}") from None
                if len(r.ids) > block_size + 1:
                    cropped += 1
                    r = Rendered(ids=r.ids[-(block_size + 1):], mask=r.mask[-(block_size + 1):], text=r.text,
                                 aligned=r.aligned, spans=r.spans)
                if sum(r.mask[1:]) == 0:  # the first token is never a target
                    dropped += 1
                    continue
                out.append(r)
            if not out:
                raise ValueError(f"no {split} conversation has an assistant token to train on within block_size "
                                 f"{block_size}: use a model with a longer context or shorter conversations")
            rows[split], n_cropped[split], n_dropped[split] = out, cropped, dropped
        return cls(rows=rows, batch_size=batch_size, block_size=block_size, pad_id=0, device=device,
                   n_cropped=n_cropped, n_dropped=n_dropped)

    def __call__(self, split: str, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        convs = self.rows[split]
        picks = torch.randint(len(convs), (self.batch_size,), generator=generator).tolist()
        return self.collate([convs[i] for i in picks])

    def collate(self, convs: list[Rendered]) -> tuple[torch.Tensor, torch.Tensor]:
        T = min(self.block_size, _round_up(max(len(r.ids) for r in convs) - 1, 8))
        x = torch.full((len(convs), T), self.pad_id, dtype=torch.long)
        y = torch.full((len(convs), T), -1, dtype=torch.long)
        for b, r in enumerate(convs):
            ids = torch.tensor(r.ids, dtype=torch.long)
            mask = torch.tensor(r.mask, dtype=torch.bool)
            n = len(r.ids) - 1
            x[b, :n] = ids[:-1]
            y[b, :n] = torch.where(mask[1:], ids[1:], -1)  # predict token t+1 only where it is trained on
        return x.to(self.device), y.to(self.device)

    def report(self) -> dict:
        """Counts to show with the run: conversations per split, how many were cropped or dropped, trained tokens."""
        return {split: {"conversations": len(rows), "cropped": self.n_cropped[split],
                        "dropped": self.n_dropped[split], "trained_tokens": sum(sum(r.mask[1:]) for r in rows),
                        "tokens": sum(len(r.ids) for r in rows)}
                for split, rows in self.rows.items()}


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# ----------------------------------------------------------------------------------------------------------------------
# LoRA through peft


def lora_target_names(model: nn.Module) -> list[str]:
    """The names a LoRA target may use: every nn.Linear of the model by its last name (c_attn, c_proj, c_fc,
    c_gate, lm_head) and by its last two (attn.c_proj, mlp.c_proj), which peft matches as suffixes."""
    names = set()
    for full, module in model.named_modules():
        if isinstance(module, nn.Linear):
            parts = full.split(".")
            names.add(parts[-1])
            if len(parts) > 1:
                names.add(".".join(parts[-2:]))
    return sorted(names)


def apply_lora(model: GPT, *, target_modules: list[str], r: int = 8, alpha: float = 16, dropout: float = 0.0) -> GPT:
    """Inject LoRA adapters (Hu et al. 2021) into the named Linears of `model`, in place, and freeze everything
    else: only the adapters' A and B have requires_grad. Returns the same GPT object (peft's inject_adapter_in_model
    keeps our class, so generate() and checkpoints still see a GPT).

    The update is W + (alpha / r) * B @ A with B starting at zero, so the adapted model starts exactly as the base."""
    from peft import LoraConfig, inject_adapter_in_model

    if not target_modules:
        raise ValueError(f"target_modules is empty: choose from {', '.join(lora_target_names(model))}")
    known = lora_target_names(model)
    unknown = [t for t in target_modules if t not in known]
    if unknown:
        raise ValueError(f"no Linear module named {', '.join(repr(t) for t in unknown)} in this model: LoRA can "
                         f"target {', '.join(known)}")
    if "lm_head" in target_modules and model.lm_head.weight is model.transformer.wte.weight:
        raise ValueError("lm_head shares its weight with the token embedding (tied): merging an adapter into it would "
                         "change the embedding too; target the blocks' Linears instead, e.g. c_attn, c_proj, c_fc")
    if not (isinstance(r, int) and r >= 1):
        raise ValueError(f"LoRA rank r ({r!r}) must be an integer >= 1: try 8 or 16")
    if not alpha > 0:
        raise ValueError(f"LoRA alpha ({alpha!r}) must be > 0: try 2 * r")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout ({dropout!r}) must be in [0, 1): try 0.0 or 0.05")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), bias="none")
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model


@torch.no_grad()
def merge_lora(model: GPT) -> GPT:
    """Fold every LoRA adapter into its Linear (W <- W + scale * B @ A) and put the plain nn.Linear back, in place:
    the result has exactly GPT's parameter names again and is saved like any model. All parameters are left
    trainable, as a freshly built GPT's are."""
    from peft.tuners.lora import LoraLayer

    replacements = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in replacements:
        module.merge(safe_merge=True)  # safe: checks the merged weights for NaN before writing them
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config  # what inject_adapter_in_model attached; the merged model is a plain GPT again
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


# ----------------------------------------------------------------------------------------------------------------------
# The learning-rate schedule of a fine-tune

DEFAULT_LR = {"full": 5e-5, "lora": 1e-3}  # LoRA trains far fewer weights from zero: an order of magnitude higher


def finetune_train_config(*, max_steps: int, lora: bool = False, learning_rate: float | None = None,
                          warmup_fraction: float = 0.05, **overrides) -> TrainConfig:
    """A TrainConfig with the schedule of a fine-tune, for train.get_lr, which already does warmup then cosine:
    a short linear warmup (warmup_fraction of the steps, at least one) so the first updates on the new data and the
    fresh embedding rows are not at full rate, then cosine decay over the whole run down to zero (min_lr=0), as
    nanochat's SFT decays to zero: a fine-tune ends on its data, no floor is needed. No weight decay for LoRA
    (its B starts at zero and decay would only pull it back). Other TrainConfig fields pass through."""
    if learning_rate is None:
        learning_rate = DEFAULT_LR["lora" if lora else "full"]
    warmup = max(1, math.ceil(max_steps * warmup_fraction))
    fields = dict(max_steps=max_steps, learning_rate=learning_rate, warmup_steps=min(warmup, max_steps),
                  lr_decay_steps=max_steps, min_lr=0.0, weight_decay=0.0 if lora else 0.01)
    fields.update(overrides)
    return TrainConfig(**fields)
