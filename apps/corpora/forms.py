from django import forms
from django.conf import settings


class UploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    text = forms.CharField(required=False, strip=False, label="…or paste text",
                           widget=forms.Textarea(attrs={"rows": 6, "placeholder": "Paste text here"}))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["text"].help_text = (f"up to {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024 // 1024} MB pasted; "
                                         f"larger text as a file")


class SplitForm(forms.Form):
    val_percent = forms.FloatField(min_value=0.1, max_value=50, label="Validation share (%)",
                                   help_text="the end of the text is held out; 10 % is nanoGPT's choice")


class EncodeForm(forms.Form):
    tokenizer = forms.ModelChoiceField(queryset=None, empty_label=None)

    def __init__(self, *args, tokenizers, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tokenizer"].queryset = tokenizers


class ConversationUploadForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
    file = forms.FileField(label="JSONL file", help_text='one {"messages": [{"role": …, "content": …}]} per line')
    val_percent = forms.FloatField(min_value=0.0, max_value=50, initial=10, label="Validation share (%)",
                                   help_text="the last conversations are held out")


class ConversationPreviewForm(forms.Form):
    model = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="slug",
                                   help_text="whose chat template and tokenizer render the conversation")
    index = forms.IntegerField(min_value=0, initial=0, label="conversation", required=False)

    def __init__(self, *args, models, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models
