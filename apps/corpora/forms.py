from django import forms
from django.conf import settings
from django.utils.translation import gettext_lazy as _


class UploadForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"))
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                                  label=_("Description"))
    text = forms.CharField(required=False, strip=False, label=_("…or paste text"),
                           widget=forms.Textarea(attrs={"rows": 6, "placeholder": _("Paste text here")}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].help_text = _("up to %(mb)s MB pasted; larger text as a file") % {
            "mb": settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024 // 1024}


class SplitForm(forms.Form):
    val_percent = forms.FloatField(min_value=0.1, max_value=50, label=_("Validation share (%)"),
                                   # xgettext:no-python-format
                                   help_text=_("the end of the text is held out; 10 % is nanoGPT's choice"))


class EncodeForm(forms.Form):
    tokenizer = forms.ModelChoiceField(queryset=None, empty_label=None, label=_("Tokenizer"))

    def __init__(self, *args, tokenizers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tokenizer"].queryset = tokenizers


class ConversationUploadForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"))
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                                  label=_("Description"))
    file = forms.FileField(label=_("JSONL file"), help_text=_('one {"messages": [{"role": …, "content": …}]} per line'))
    val_percent = forms.FloatField(min_value=0.0, max_value=50, initial=10, label=_("Validation share (%)"),
                                   help_text=_("the last conversations are held out"))


class ConversationPreviewForm(forms.Form):
    model = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="slug",
                                   label=_("Model"),
                                   help_text=_("whose chat template and tokenizer render the conversation"))
    index = forms.IntegerField(min_value=0, initial=0, label=_("conversation"), required=False)

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models
