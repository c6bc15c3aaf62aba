"""Forms of the task-set kind of data set: generate problems, or upload them as JSONL."""

from django import forms
from django.utils.translation import gettext_lazy as _

from workers.gpt import tasks


class TaskSetGenerateForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"))
    task = forms.ChoiceField(choices=[(t, t) for t in tasks.TASKS], label=_("Task"),
                             help_text=_("arithmetic: evaluate an expression; countdown: reach a target with the "
                                         "given numbers; letters: count a letter in a word"))
    difficulty = forms.TypedChoiceField(choices=[(d, d) for d in tasks.DIFFICULTIES], coerce=int, initial=1,
                                        label=_("Difficulty"))
    instruction = forms.ChoiceField(
        choices=[("think", _("think, then answer: <think>…</think><answer>…</answer>")),
                 ("short", _("short: answer in one short sentence"))],
        initial="think", required=False, label=_("Instruction"),
        help_text=_("what follows each problem; a small model such as SmolLM2-135M cannot keep the think/answer "
                    "format, and learns faster from short answers (the checker reads the last number either way)"))
    seed = forms.IntegerField(min_value=0, max_value=2**31 - 1, initial=0, label=_("Seed"))
    n_train = forms.IntegerField(min_value=1, max_value=20_000, initial=1000, label=_("Train problems"))
    n_heldout = forms.IntegerField(min_value=1, max_value=20_000, initial=200, label=_("Held-out problems"),
                                   help_text=_("never shares a problem with the train split"))
    description = forms.CharField(required=False, max_length=2000, label=_("Description"),
                                  widget=forms.Textarea(attrs={"rows": 2}))

    def clean_instruction(self):
        return self.cleaned_data.get("instruction") or "think"


class TaskSetUploadForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"))
    file = forms.FileField(label=_("Problems (JSONL)"),
                           help_text=_('one JSON object a line: {"prompt": "...", "answer": "...", "match": '
                                       '"exact" | "numeric"} (match is optional)'))
    description = forms.CharField(required=False, max_length=2000, label=_("Description"),
                                  widget=forms.Textarea(attrs={"rows": 2}))
