"""The sweep form: data, a preset (its sizes, context, batch), and optionally the budgets and sizes per budget."""

import math

from django import forms
from django.utils.translation import gettext_lazy as _

from apps.training import sources
from workers.gpt import scaling

MAX_BUDGETS = 8


class SweepForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, label=_("name"),
                           help_text=_("optional; a name is made from the preset"))
    corpus = forms.ModelChoiceField(queryset=None, empty_label=None, label=_("corpus"))
    tokenizer = forms.ModelChoiceField(queryset=None, empty_label=None, label=_("tokenizer"))
    preset = forms.ChoiceField(label=_("preset"), choices=[(p.key, _(p.label)) for p in scaling.SWEEP_PRESETS.values()],
                               help_text=_("the model sizes, context and batch the grid is made of"))
    budgets = forms.CharField(required=False, label=_("budgets (FLOPs)"),
                              help_text=_("comma-separated, e.g. 1e12, 2e12, 4e12; empty = the preset's"))
    per_budget = forms.IntegerField(required=False, min_value=scaling.MIN_SIZES_PER_BUDGET, max_value=9,
                                    label=_("sizes per budget"), help_text=_("empty = the preset's"))

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        self.fields["corpus"].queryset = sources.corpus_choices(user=user)
        self.fields["tokenizer"].queryset = sources.tokenizer_choices(user=user)

    @classmethod
    def initial_for(cls, *, preset_key: str, user) -> dict:
        preset = scaling.SWEEP_PRESETS.get(preset_key) or scaling.CPU_PRESET
        corpus = sources.corpus_find(name=preset.corpus, user=user) or sources.corpus_choices(user=user).first()
        tokenizer = sources.tokenizer_find(names=preset.tokenizers, user=user)
        return {"preset": preset.key, "corpus": corpus.pk if corpus else None,
                "tokenizer": tokenizer.pk if tokenizer else None}

    def clean_budgets(self) -> list[float] | None:
        text = self.cleaned_data["budgets"].strip()
        if not text:
            return None
        try:
            values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise forms.ValidationError(_("budgets must be numbers separated by commas, e.g. 1e12, 2e12, 4e12"))
        if not values or any(not math.isfinite(v) or v <= 0 for v in values):
            raise forms.ValidationError(_("budgets must be positive FLOP counts, e.g. 1e12, 2e12, 4e12"))
        if len(set(values)) != len(values):
            raise forms.ValidationError(_("each budget once, please"))
        if len(values) > MAX_BUDGETS:
            raise forms.ValidationError(_("at most %(n)d budgets") % {"n": MAX_BUDGETS})
        return sorted(values)
