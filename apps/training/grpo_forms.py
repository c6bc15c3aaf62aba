"""The "Reinforce with GRPO" form: a model, a task set, and the GRPO settings (validated by GRPOConfig)."""

from django import forms
from django.utils.translation import gettext_lazy as _

from workers.gpt.config import ConfigError
from workers.gpt.grpo_config import GRPOConfig
from apps.corpora.models import Corpus
from apps.registry.models import Model


class GRPOForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label=_("Name"),
                           help_text=_("optional: by default the model and the task set"))
    base_model = forms.ModelChoiceField(queryset=None, label=_("Model"),
                                        help_text=_("the model to reinforce: SmolLM2-135M-Instruct, an SFT model, "
                                                    "or one of yours"))
    corpus = forms.ModelChoiceField(queryset=None, label=_("Task set"),
                                    help_text=_("problems with a checker (Data → New task set)"))
    group_size = forms.IntegerField(initial=8, label=_("G (answers per problem)"),
                                    help_text=_("each answer is judged against the others to its problem: G ≥ 2"))
    steps = forms.IntegerField(initial=50, min_value=1, max_value=100_000, label=_("Steps"))
    learning_rate = forms.FloatField(initial=1e-5, label=_("Learning rate"))
    beta = forms.FloatField(initial=0.0, min_value=0, label=_("KL weight (beta)"),
                            help_text=_("penalty for moving away from the starting model; 0 keeps no reference"))
    max_new_tokens = forms.IntegerField(initial=64, min_value=1, label=_("Max new tokens"))
    temperature = forms.FloatField(initial=1.0, label=_("Temperature"))
    prompts_per_step = forms.IntegerField(initial=4, min_value=1, max_value=256, label=_("Prompts per step"))
    lora = forms.BooleanField(required=False, initial=True, label=_("LoRA (else full weights)"))
    format_reward = forms.BooleanField(required=False, initial=False, label=_("Format reward"),
                                       help_text=_("+0.1 for an answer written as <think>…</think><answer>…</answer>"))

    FORMAT_REWARD = 0.1

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)

        # every model the user could see is offered to the field, so a refused choice gets the service's words
        # ("another user's private model") instead of Django's "not one of the available choices"
        self.fields["base_model"].queryset = Model.objects.all()
        self.fields["corpus"].queryset = Corpus.objects.visible_to(user).filter(kind=Corpus.Kind.TASKS)
        self.user = user

    def grpo_config(self) -> dict:
        """The GRPOConfig dict of the cleaned form; ConfigError (naming the field) when GRPO would refuse it."""
        d = self.cleaned_data
        cfg = GRPOConfig(steps=d["steps"], prompts_per_step=d["prompts_per_step"], group_size=d["group_size"],
                         learning_rate=d["learning_rate"], beta=d["beta"], max_new_tokens=d["max_new_tokens"],
                         temperature=d["temperature"], format_reward=self.FORMAT_REWARD if d["format_reward"] else 0.0)
        cfg.validate()
        return cfg.to_dict()

    def clean(self):
        data = super().clean()
        if not self.errors:
            try:
                self.grpo_config()
            except ConfigError as exc:
                self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        return data
