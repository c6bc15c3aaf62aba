from django import forms
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from apps.corpora.models import Corpus
from apps.tokenization import services
from apps.tokenization.selectors import TokenizationError
from workers.gpt import tokenizers as toklib


class _CorpusField(forms.ModelChoiceField):
    def label_from_instance(self, corpus):
        return f"{corpus.name} ({corpus.size_bytes / 1024 / 1024:.1f} MB)"


def _checked(check, value):
    """check(value) as the services check it; its TokenizationError becomes the field's error."""
    try:
        return check(value)
    except TokenizationError as exc:
        raise forms.ValidationError(str(exc)) from None


def _name_field(example: str) -> forms.CharField:
    return forms.CharField(max_length=64, label=_("Name"), help_text=example)


class _FromCorpusForm(forms.Form):
    """A new tokenizer made from a corpus: its name (checked as the services check it) and the corpus, chosen among
    `corpora` (what the person may read)."""

    name = _name_field("")
    corpus = _CorpusField(queryset=Corpus.objects.none(), empty_label=None, label=_("Corpus"))

    def __init__(self, *args, corpora, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["corpus"].queryset = corpora

    def clean_name(self):
        return _checked(services.tokenizer_check_name, self.cleaned_data["name"])


class TrainForm(_FromCorpusForm):
    name = _name_field(_("lowercase letters, digits and . _ - (e.g. shakespeare-bpe-4096)"))
    vocab_size = forms.IntegerField(
        initial=4096, min_value=1, label=_("Vocabulary size"),
        help_text=format_lazy(_("{low} byte tokens + merges + special tokens; at most {high} so ids fit in uint16"),
                              low=toklib.MIN_VOCAB_SIZE, high=f"{toklib.MAX_VOCAB_SIZE:,}"))
    pattern = forms.ChoiceField(
        choices=[("gpt4", _("GPT-4 (cl100k_base): digits in groups of 3, case-insensitive contractions")),
                 ("gpt2", _("GPT-2: letters, digits and punctuation runs, leading space kept"))],
        initial="gpt4", label=_("Split pattern"),
        help_text=_("text is cut into pieces by this regular expression first; merges never cross a piece"))
    special_tokens = forms.CharField(initial=toklib.ENDOFTEXT, label=_("Special tokens"),
                                     help_text=_("separated by spaces; must include <|endoftext|>"))

    def clean_special_tokens(self):
        return _checked(services.parse_special_tokens, self.cleaned_data["special_tokens"])


class CharForm(_FromCorpusForm):
    name = _name_field(_("e.g. songci-char"))
