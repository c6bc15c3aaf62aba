"""The fine-tuning form ("Fine-tune a model" on the Training page, and `manage.py finetune`): the fields parse, and
apps.training.finetune.sft_check refuses what would fail later, with its message on the field at fault."""

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.registry.models import Model
from apps.training import estimates, finetune
from apps.training.selectors import step_times, train_workers
from apps.training.services import TrainingError

METHODS = [("full", _("full fine-tuning: every weight trains")),
           ("lora", _("LoRA: small adapters train, the base weights stay frozen (merged at the end)"))]


class FinetuneForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text=_("optional; made from the base model"))
    # every non-archived model: sft_check says why another user's draft is refused, instead of "not a valid choice"
    base_model = forms.ModelChoiceField(queryset=Model.objects.exclude(status=Model.Status.ARCHIVED),
                                        empty_label=None, to_field_name="slug",
                                        help_text=_("a published model, or one of your own"))
    corpus = forms.ModelChoiceField(queryset=None, empty_label=None, label=_("conversation set"))
    method = forms.ChoiceField(choices=METHODS, initial="full", widget=forms.RadioSelect)
    lora_rank = forms.IntegerField(min_value=1, max_value=256, initial=8, required=False, label=_("LoRA rank r"))
    lora_alpha = forms.FloatField(min_value=0.001, max_value=4096, initial=16, required=False, label=_("LoRA alpha"),
                                  help_text=_("the update is scaled by alpha / r; 2 × r is usual"))
    lora_dropout = forms.FloatField(min_value=0.0, max_value=0.9, initial=0.0, required=False,
                                    label=_("LoRA dropout"))
    lora_targets = forms.CharField(required=False, initial="c_attn, c_proj", label=_("LoRA target modules"),
                                   help_text=_("Linear layers by name, comma-separated"))
    max_steps = forms.IntegerField(min_value=1, max_value=200_000, initial=300, label="max_steps")
    learning_rate = forms.FloatField(min_value=1e-8, max_value=1.0, required=False, label="learning_rate",
                                     help_text=_("empty: 5e-5 for full fine-tuning, 1e-3 for LoRA"))
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=8, label="batch_size",
                                    help_text=_("conversations per step, padded to the longest"))
    block_size = forms.IntegerField(min_value=8, max_value=131072, required=False, label="block_size",
                                    help_text=_("empty: the base model's context; longer conversations are cropped "
                                                "from the left"))
    eval_interval = forms.IntegerField(min_value=1, max_value=200_000, required=False, label="eval_interval",
                                       help_text=_("empty: every tenth of the run"))
    device = forms.ChoiceField(choices=[("auto", "auto"), ("cpu", "cpu"), ("cuda", "cuda"), ("mps", "mps")],
                               initial="auto", required=False)

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.plan = None
        self.fields["corpus"].queryset = finetune.conversation_set_choices(user=user)
        # the select lists only what the user may fine-tune; the field accepts any slug so that sft_check can say why
        self.fields["base_model"].widget.choices = [(m.slug, str(m))
                                                    for m in finetune.base_model_choices(user=user)]

    @classmethod
    def initial_for(cls, *, user, base: str = "") -> dict:
        """The form's starting values: the named base model (or the first the user may use), the first set."""
        models = finetune.base_model_choices(user=user)
        model = models.filter(slug=base).first() or models.first()
        corpus = finetune.conversation_set_choices(user=user).first()
        return {"base_model": model.slug if model else "", "corpus": corpus.pk if corpus else None, "method": "full",
                "lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0, "lora_targets": "c_attn, c_proj",
                "max_steps": 300, "batch_size": 8, "device": "auto"}

    def clean(self):
        d = super().clean()
        if self.errors:
            return d
        lora = d["method"] == "lora"
        try:
            self.plan = finetune.sft_check(
                user=self.user, base=d["base_model"], corpus=d["corpus"], max_steps=d["max_steps"],
                batch_size=d["batch_size"], block_size=d.get("block_size"), learning_rate=d.get("learning_rate"),
                eval_interval=d.get("eval_interval"), lora=lora, lora_rank=d.get("lora_rank") or 8,
                lora_alpha=d.get("lora_alpha") or 16.0, lora_dropout=d.get("lora_dropout") or 0.0,
                lora_targets=(d.get("lora_targets") or "").split(",") if lora else None,
                device=d.get("device") or "auto")
        except TrainingError as exc:
            field = exc.field if exc.field in self.fields else None
            self.add_error(field, str(exc))
        return d

    def estimate(self) -> dict | None:
        """Tokens per step and trainable parameters of the checked plan, for the page."""
        if self.plan is None:
            return None
        from workers.gpt.config import GPTConfig, flops_per_token, param_count

        cfg = GPTConfig.from_dict(dict(self.plan.model_config))
        total = param_count(cfg)
        lora = self.plan.sft["lora"]
        trainable = total
        if lora:
            linears = {"attn.c_attn": (cfg.n_embd, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_size),
                       "attn.c_proj": (cfg.n_embd, cfg.n_embd), "mlp.c_fc": (cfg.n_embd, cfg.intermediate_size),
                       "mlp.c_proj": (cfg.intermediate_size, cfg.n_embd)}
            if cfg.mlp == "swiglu":
                linears["mlp.c_gate"] = (cfg.n_embd, cfg.intermediate_size)
            hit = [shape for name, shape in linears.items()
                   if any(name == t or name.endswith("." + t) for t in lora["targets"])]
            trainable = cfg.n_layer * sum(lora["r"] * (n_in + n_out) for n_in, n_out in hit)
            if "lm_head" in lora["targets"]:
                trainable += lora["r"] * (cfg.n_embd + cfg.vocab_size)
        t = self.plan.train_config
        # FLOPs per step at the longest padded batch; LoRA computes no gradients for the frozen weights: about 4N a
        # token instead of 6N
        step_flops = flops_per_token(cfg) * t["batch_size"] * self.plan.sft["block_size"] * (2 / 3 if lora else 1)
        shape = estimates.shape_key(kind="sft", model_config=self.plan.model_config, train_config=t,
                                    data={"sft": self.plan.sft})
        times = estimates.worker_times(workers=train_workers(), steps=t["max_steps"], step_flops=step_flops,
                                       measured=step_times(shape=shape, kind="sft"))
        return {"total_params": total, "workers": times, "trainable_params": trainable,
                "tokens_per_step_max": t["batch_size"] * self.plan.sft["block_size"],
                "n_train": self.plan.n_train, "n_val": self.plan.n_val,
                "epochs": t["max_steps"] * t["batch_size"] / max(1, self.plan.n_train),
                "chatml_added": self.plan.sft["chatml_added"], "learning_rate": t["learning_rate"]}
