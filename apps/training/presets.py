"""Starting points for the submit form: nanoGPT's published Shakespeare recipes, a small BPE model, the same small
model with Llama-style blocks, and GPT-2 124M, the shape llm.c measures itself with.

Each preset fills the whole form; the user may change anything before launching. `reference` is the validation loss
the recipe is published with, drawn on the dashboard as a line to aim at (only while the model and steps match).
"""

from dataclasses import dataclass, field

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    description: str
    corpus: str  # the bundled corpus's name
    tokenizers: tuple[str, ...]  # tokenizer names, the first that exists wins
    model: dict = field(default_factory=dict)  # GPTConfig fields (vocab_size comes from the tokenizer)
    train: dict = field(default_factory=dict)  # TrainConfig fields
    reference: float | None = None
    reference_source: str = ""


# The block styles the form offers: GPTConfig's norm / pos / mlp fields set together. GPT-2: LayerNorm, learned
# absolute positions, a GELU MLP. Llama: RMSNorm, rotary positions (RoPE), a gated SwiGLU MLP; Llama also uses
# grouped-query attention (n_kv_head < n_head), a separate field, since it combines with either style.
BLOCK_STYLES = {
    "gpt2": dict(norm="layernorm", pos="learned", mlp="gelu"),
    "llama": dict(norm="rmsnorm", pos="rope", mlp="swiglu"),
}


def block_style(model: dict) -> str:
    """The block style of a model config (dict of GPTConfig fields; the defaults are GPT-2's)."""
    for key, fields in BLOCK_STYLES.items():
        if all(model.get(k, BLOCK_STYLES["gpt2"][k]) == v for k, v in fields.items()):
            return key
    return "gpt2"


# nanoGPT config/train_shakespeare_char.py; the CPU recipe is its README's command line for a laptop:
# --device=cpu --compile=False --eval_iters=20 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
# --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0  ("val loss 1.88")
_SHAKESPEARE_TRAIN = dict(
    learning_rate=1e-3, min_lr=1e-4, beta2=0.99, warmup_steps=100, weight_decay=0.1, grad_clip=1.0, eval_interval=250
)

PRESETS = {
    p.key: p
    for p in [
        Preset(
            key="shakespeare-char-cpu",
            label=_("Shakespeare char, CPU"),
            description=_("nanoGPT's laptop recipe: a 0.8M-parameter model, about two minutes on two CPU cores."),
            corpus="shakespeare",
            tokenizers=("shakespeare-char", "char"),
            model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False),
            train=dict(_SHAKESPEARE_TRAIN, batch_size=12, max_steps=2000, eval_iters=20, checkpoint_interval=250),
            reference=1.88,
            reference_source=_("nanoGPT README, CPU run"),
        ),
        Preset(
            key="shakespeare-char-baby",
            label=_("Shakespeare char, baby GPT"),
            description=_("nanoGPT's baby GPT (10.7M parameters, context 256): minutes on a GPU, hours on a CPU."),
            corpus="shakespeare",
            tokenizers=("shakespeare-char", "char"),
            model=dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False),
            train=dict(_SHAKESPEARE_TRAIN, batch_size=64, max_steps=5000, eval_iters=200, checkpoint_interval=250),
            reference=1.47,
            reference_source=_("nanoGPT README, one A100"),
        ),
        Preset(
            key="shakespeare-bpe-small",
            label=_("Shakespeare BPE, small"),
            description=_("Sub-word tokens: the small model reads words and pieces of words. Uses a BPE trained "
                          "on Shakespeare on the Tokenizers page if you made one (else GPT-2's 50k vocabulary, "
                          "much slower). "
                          "Losses are per token: not comparable with the character runs."),
            corpus="shakespeare",
            tokenizers=("shakespeare-bpe", "gpt2"),
            model=dict(n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False),
            train=dict(_SHAKESPEARE_TRAIN, batch_size=12, max_steps=1500, eval_iters=20, checkpoint_interval=250,
                       learning_rate=1e-3, min_lr=1e-4),
        ),
        Preset(
            key="shakespeare-char-llama",
            label=_("Shakespeare char, Llama blocks"),
            description=_("The CPU recipe's size with Llama's block: RMSNorm, rotary positions, a SwiGLU MLP and 2 "
                          "key/value heads shared by 4 query heads. Compare its curve with the GPT-2-style run."),
            corpus="shakespeare",
            tokenizers=("shakespeare-char", "char"),
            model=dict(n_layer=4, n_head=4, n_kv_head=2, n_embd=128, block_size=64, dropout=0.0, bias=False,
                       **BLOCK_STYLES["llama"]),
            train=dict(_SHAKESPEARE_TRAIN, batch_size=12, max_steps=2000, eval_iters=20, checkpoint_interval=250),
        ),
        # llm.c's train_gpt2 reference: GPT-2 small, 12 layers x 12 heads x 768, context 1024, biases, AdamW at 6e-4
        # with beta2 0.95 and weight decay 0.1, bf16. 8 x 8 micro-batches = 65,536 tokens per step
        Preset(
            key="gpt2-124m",
            label=_("GPT-2 124M"),
            description=_("GPT-2 small, the shape llm.c and nanoGPT measure themselves with (124M parameters, "
                          "context 1024, GPT-2's tokenizer, bf16, compiled). For a CUDA GPU: days on a CPU."),
            corpus="shakespeare",
            tokenizers=("gpt2",),
            model=dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0, bias=True,
                       **BLOCK_STYLES["gpt2"]),
            train=dict(batch_size=8, grad_accum=8, max_steps=2000, learning_rate=6e-4, min_lr=6e-5, warmup_steps=100,
                       weight_decay=0.1, beta2=0.95, grad_clip=1.0, eval_interval=250, eval_iters=20,
                       checkpoint_interval=500, dtype="auto", compile=True),
        ),
    ]
}

DEFAULT_PRESET = "shakespeare-char-cpu"


def padded_vocab_size(n_vocab: int) -> int:
    """The model's vocab_size for a tokenizer with n_vocab ids: large vocabularies are padded up to a multiple of 64
    (nanoGPT's 50257 -> 50304: faster matmuls); small ones (characters) are kept exact, like nanoGPT's 65."""
    return n_vocab if n_vocab < 1024 else -(-n_vocab // 64) * 64


def preset_matches(preset: Preset | None, model_config: dict, train_config: dict) -> bool:
    """Whether a run still is its preset's recipe (so the published result is a fair line to draw)."""
    if preset is None or preset.reference is None:
        return False
    same_model = all(model_config.get(k) == v for k, v in preset.model.items())
    return same_model and all(train_config.get(k) == preset.train.get(k) for k in ("batch_size", "max_steps"))
