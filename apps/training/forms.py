"""The submit form and the fork form. Validation builds the real configs (workers.gpt.config), so the form refuses
exactly what the model library would, with the library's messages naming the field, plus what only the app knows:
the data (vocabulary, split sizes) and the workers' memory."""

from django import forms
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.training import estimates, sources
from apps.training.presets import BLOCK_STYLES, PRESETS, block_style
from apps.training.selectors import train_workers
from workers.gpt.config import (DEVICES, DTYPES, ConfigError, GPTConfig, TrainConfig, memory_fit_error,
                               split_fit_error)

MODEL_FIELDS = ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "dropout", "bias")
TRAIN_FIELDS = ("batch_size", "grad_accum", "max_steps", "learning_rate", "min_lr", "warmup_steps", "weight_decay",
                "grad_clip", "beta1", "beta2", "eval_interval", "eval_iters", "checkpoint_interval", "keep_last",
                "seed", "device", "dtype", "compile", "log_interval", "devices")
ADVANCED_FIELDS = ("weight_decay", "grad_clip", "beta1", "beta2", "eval_iters", "keep_last", "seed", "device", "dtype",
                   "compile", "log_interval")
BLOCK_CHOICES = [("gpt2", "GPT-2: LayerNorm, learned positions, GELU"), ("llama", "Llama: RMSNorm, RoPE, SwiGLU")]


def _int(label, lo, hi, help_text=""):
    return forms.IntegerField(label=label, min_value=lo, max_value=hi, help_text=help_text)


def _float(label, lo, hi, help_text=""):
    return forms.FloatField(label=label, min_value=lo, max_value=hi, help_text=help_text,
                            widget=forms.NumberInput(attrs={"step": "any"}))


class RunForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="optional; a name is made from the preset")
    preset = forms.ChoiceField(required=False, widget=forms.HiddenInput,
                               choices=[("", "custom")] + [(k, p.label) for k, p in PRESETS.items()])
    corpus = forms.ModelChoiceField(queryset=None, empty_label=None, help_text="the text to learn from")
    tokenizer = forms.ModelChoiceField(queryset=None, empty_label=None,
                                       help_text="the corpus is encoded with it first, if it is not yet")

    # the model (nanoGPT's names)
    n_layer = _int("n_layer", 1, 96, "transformer blocks")
    n_head = _int("n_head", 1, 128, "attention heads per block")
    n_kv_head = forms.IntegerField(label="n_kv_head", min_value=1, max_value=128, required=False,
                                   help_text="key/value heads (grouped-query attention); divides n_head; empty = n_head")
    block = forms.ChoiceField(label="block style", choices=BLOCK_CHOICES, initial="gpt2", required=False,
                              help_text="the norm, position encoding and MLP of every transformer block")
    n_embd = _int("n_embd", 8, 12288, "width of the residual stream; divisible by n_head")
    block_size = _int("block_size", 2, 16384, "context length in tokens")
    dropout = _float("dropout", 0.0, 0.9, "0.0 for pretraining; 0.1–0.2 against overfitting small data")
    bias = forms.BooleanField(required=False, help_text="biases in Linear and LayerNorm layers, like GPT-2")

    # the optimization
    batch_size = _int("batch_size", 1, 8192, "sequences per micro-batch")
    grad_accum = _int("grad_accum", 1, 1024, "micro-batches per optimizer step")
    devices = forms.IntegerField(label=gettext_lazy("devices"), min_value=1, max_value=1024, initial=1, required=False,
                                 help_text=gettext_lazy("processes training the run together (DDP), one per GPU or "
                                                        "CPU core; the global batch stays batch_size × grad_accum"))
    max_steps = _int("max_steps", 1, 2_000_000, "optimizer steps")
    learning_rate = _float("learning_rate", 1e-8, 10.0, "peak, after warmup")
    min_lr = _float("min_lr", 0.0, 10.0, "the cosine decay ends here; about learning_rate/10")
    warmup_steps = _int("warmup_steps", 0, 2_000_000, "linear warmup from 0")
    weight_decay = _float("weight_decay", 0.0, 10.0, "AdamW, on matrices only")
    grad_clip = _float("grad_clip", 0.0, 1e6, "clip the global gradient norm; 0 = off")
    beta1 = _float("beta1", 0.0, 0.9999, "AdamW")
    beta2 = _float("beta2", 0.0, 0.9999, "AdamW; 0.99 for small models and data")
    eval_interval = _int("eval_interval", 1, 2_000_000, "estimate the loss on both splits (and sample) this often")
    eval_iters = _int("eval_iters", 1, 10_000, "batches per estimate")
    checkpoint_interval = _int("checkpoint_interval", 0, 2_000_000, "save this often (and at the end); 0 = end only")
    keep_last = _int("keep_last", 1, 100, "checkpoints kept, plus the best by val loss")
    seed = _int("seed", 0, 2**31 - 1, "same seed, same run (on a CPU)")
    device = forms.ChoiceField(choices=[(d, d) for d in DEVICES], help_text="auto: the worker's GPU if it has one")
    dtype = forms.ChoiceField(choices=[(d, d) for d in DTYPES], help_text="auto: bfloat16 autocast on CUDA")
    compile = forms.BooleanField(required=False, help_text="torch.compile: faster steps on CUDA after a slow first one")
    log_interval = forms.IntegerField(label="log_interval", min_value=1, max_value=100_000, required=False,
                                      help_text="record a step this often; empty = every step on a CPU, every 10th on "
                                                "CUDA (reading the loss makes the CPU wait for the GPU)")

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["corpus"].queryset = sources.corpus_choices(user=user)
        self.fields["tokenizer"].queryset = sources.tokenizer_choices(user=user)
        self.estimate: dict | None = None
        self.data_info: sources.DataInfo | None = None
        self.warnings: list[str] = []
        self.model_cfg: GPTConfig | None = None
        self.train_cfg: TrainConfig | None = None
        self.workers = train_workers()
        if self.workers:
            listed = "; ".join(f"{w['name']}: {device_capacity(w)} ({_device_words(w)})" for w in self.workers)
            self.fields["devices"].help_text = _("processes training the run together (DDP); the global batch stays "
                                                 "batch_size × grad_accum. Live train workers have: %(listed)s") % {
                "listed": listed}

    @classmethod
    def initial_for(cls, *, preset_key: str, user) -> dict:
        """The form's values for a preset: its sizes, its corpus, and the best tokenizer there is for it."""
        preset = PRESETS.get(preset_key) or PRESETS["shakespeare-char-cpu"]
        defaults = TrainConfig()
        initial = {f: getattr(defaults, f) for f in TRAIN_FIELDS} | {"bias": False, "preset": preset.key}
        initial |= preset.model | preset.train
        initial["block"] = block_style(preset.model)
        for name in BLOCK_STYLES["gpt2"]:
            initial.pop(name, None)  # the form has the style, not its three fields
        corpus = sources.corpus_find(name=preset.corpus, user=user) or sources.corpus_choices(user=user).first()
        tokenizer = None
        if preset.key == "shakespeare-bpe-small":
            tokenizer = sources.small_bpe_for(corpus=corpus, user=user)
        tokenizer = tokenizer or sources.tokenizer_find(names=preset.tokenizers, user=user)
        initial["corpus"] = corpus.pk if corpus else None
        initial["tokenizer"] = tokenizer.pk if tokenizer else None
        return initial

    def clean_devices(self):
        return self.cleaned_data.get("devices") or 1  # left empty: one

    def clean(self):
        data = super().clean()
        corpus, tokenizer = data.get("corpus"), data.get("tokenizer")
        if corpus is None or tokenizer is None:
            return data
        info = self.data_info = sources.data_info(corpus=corpus, tokenizer=tokenizer)
        if info.problem:
            self.add_error("tokenizer", info.problem)
        if any(f in self.errors for f in MODEL_FIELDS + TRAIN_FIELDS + ("block",)):
            return data  # a field is missing or out of range: the configs cannot be built yet
        try:
            self.model_cfg = GPTConfig(vocab_size=info.vocab_size, **{f: data[f] for f in MODEL_FIELDS},
                                       **BLOCK_STYLES[data.get("block") or "gpt2"])
            self.train_cfg = TrainConfig(**{f: data[f] for f in TRAIN_FIELDS})
        except ConfigError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
            return data
        self._check_data(info, corpus, tokenizer)
        self._check_devices(self.train_cfg.devices)
        self.estimate = estimates.estimate(self.model_cfg, self.train_cfg, workers=self.workers,
                                           train_tokens=info.train_tokens)
        self._check_memory(self.estimate)
        return data

    def _check_data(self, info: sources.DataInfo, corpus, tokenizer) -> None:
        of = f"of {corpus.name} with {tokenizer.name}"
        problem = split_fit_error(self.model_cfg.block_size, {"validation": info.val_tokens,
                                                              "training": info.train_tokens},
                                  approx=not info.exact, of=of)
        if problem is None:
            return
        if info.exact:
            self.add_error(problem.field, str(problem))
        else:
            self.warnings.append(f"{problem}; this is an estimate, the worker checks the real count")

    def _check_devices(self, devices: int) -> None:
        """A run over more devices than any live train worker has would wait for ever: refuse it, saying what
        exists. (No live worker: the run waits in the queue, as for memory.)"""
        if devices == 1 or not self.workers:
            return
        largest = max(self.workers, key=device_capacity)
        if devices > device_capacity(largest):
            self.add_error("devices", _(
                "devices (%(devices)d) is more than any live train worker has: the most is %(most)d on %(name)s "
                "(%(what)s). Ask for at most %(most)d, or start a train worker on a machine with more.") % {
                "devices": devices, "most": device_capacity(largest), "name": largest["name"],
                "what": _device_words(largest)})

    def _check_memory(self, est: dict) -> None:
        if estimates.fits_somewhere(est):
            if not est["workers"]:
                self.warnings.append("No train worker is online, so memory and time are not checked against a "
                                     "device yet; the run waits in the queue until one starts.")
            return
        largest = max(est["workers"], key=lambda w: w["memory_bytes"] or 0)
        problem = memory_fit_error(self.model_cfg, self.train_cfg, memory_bytes=largest["memory_bytes"],
                                   device=f"the largest train worker ({largest['name']})")
        if problem is not None:
            self.add_error(problem.field, str(problem))

    def configs(self) -> tuple[dict, dict]:
        return self.model_cfg.to_dict(), self.train_cfg.to_dict()


def device_capacity(worker: dict) -> int:
    """How many ranks a train worker can run: its GPUs, or its CPU cores (gloo, one process per core)."""
    device = worker.get("device") or {}
    return int((device.get("cores") if device.get("kind") == "cpu" else device.get("count")) or 1)


def _device_words(worker: dict) -> str:
    device = worker.get("device") or {}
    if device.get("kind") == "cpu":
        return _("%(n)d CPU cores") % {"n": device_capacity(worker)}
    return f"{device_capacity(worker)} × {device.get('kind', '?').upper()} {device.get('name', '')}".strip()


class ForkForm(forms.Form):
    """A fork changes how training continues from a checkpoint: how long, and how fast."""

    name = forms.CharField(max_length=100, required=False)
    max_steps = _int("max_steps", 1, 2_000_000, "the total, counting the steps before the checkpoint")
    learning_rate = _float("learning_rate", 1e-8, 10.0, "peak learning rate of the schedule")
    min_lr = _float("min_lr", 0.0, 10.0, "where the cosine decay ends")
    warmup_steps = _int("warmup_steps", 0, 2_000_000, "warmup of the schedule (steps counted from 0)")

    def __init__(self, *args, fields=("max_steps", "learning_rate", "min_lr", "warmup_steps"), **kwargs):
        super().__init__(*args, **kwargs)
        for name in [f for f in self.fields if f != "name" and f not in fields]:
            del self.fields[name]  # what this kind of run has not (GRPO: no min_lr)

    def changes(self) -> dict:
        return {k: v for k, v in self.cleaned_data.items() if k != "name"}
