import shutil
from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.translation import gettext, gettext_lazy as _

from apps.registry import services
from apps.system import files

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
HF_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "tokenizer.json",
            "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "special_tokens_map.json")


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFileField, self).clean(d, initial) for d in data]
        return [super().clean(data, initial)] if data else []


class ImportForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"), help_text=_("what the registry, the pickers and the API call it"))
    upload = MultipleFileField(
        required=False, label=_("Files"),
        help_text=_("a .gguf file (a Llama-family model: SmolLM2, TinyLlama, Llama 3 …), or the files of a Hugging Face "
                    "GPT-2 / Llama directory: config.json, model.safetensors (or its shards and index), tokenizer.json, "
                    "tokenizer_config.json"))
    path = forms.CharField(
        required=False, max_length=500, label=_("…or a path on the server"),
        help_text=_("a .gguf file or a Hugging Face directory already on this machine (nothing is uploaded)"))
    publish = forms.BooleanField(required=False, label=_("Publish"), help_text=_("publish it when the import succeeds"))

    def clean(self):
        data = super().clean()
        uploads, path = data.get("upload") or [], (data.get("path") or "").strip()
        if bool(uploads) == bool(path):
            raise forms.ValidationError(gettext("Upload files or give a path on the server (one of the two)."))
        for f in uploads:
            name = Path(f.name).name
            if name.lower().endswith(PICKLE_SUFFIXES):
                raise forms.ValidationError(gettext(
                    "%(name)s is a pickle file, which can run code when loaded; LLM Lab only loads safetensors and "
                    "GGUF. Convert it where you trust it (save_pretrained(..., safe_serialization=True)).") % {"name": name})
            if f.size > settings.REGISTRY_MAX_UPLOAD_BYTES:
                raise forms.ValidationError(gettext("%(name)s is over the upload limit of %(limit)s GB: give its path "
                                                    "instead.") % {"name": name, "limit": f"{settings.REGISTRY_MAX_UPLOAD_BYTES / 1e9:.0f}"})
        if uploads:
            names = [Path(f.name).name for f in uploads]
            ggufs = [n for n in names if n.lower().endswith(".gguf")]
            if ggufs and len(names) > 1:
                raise forms.ValidationError(gettext("Upload one .gguf file on its own."))
            if not ggufs and "config.json" not in names:
                raise forms.ValidationError("Upload a .gguf file, or a Hugging Face directory's files including "
                                            "config.json and model.safetensors.")
            unknown = [n for n in names if not ggufs and n not in HF_FILES and not n.endswith(".safetensors")]
            if unknown:
                raise forms.ValidationError(f"{unknown[0]} is not part of a Hugging Face checkpoint this importer "
                                            f"reads.")
        return data

    def save(self, *, user):
        """Put the uploaded files in place (if any) and queue the import job."""
        data = self.cleaned_data
        uploads = data.get("upload") or []
        if not uploads:
            return services.model_import_create(user=user, source_path=data["path"].strip(), name=data["name"],
                                                publish=data["publish"])
        tmp = files.temp_dir(files.artifact_path("uploads"), "model")
        try:
            for f in uploads:
                with open(tmp / Path(f.name).name, "wb") as out:
                    for chunk in f.chunks():
                        out.write(chunk)
            source = tmp / Path(uploads[0].name).name if len(uploads) == 1 and uploads[0].name.lower().endswith(
                ".gguf") else tmp
            return services.model_import_create(user=user, source_path=str(source), name=data["name"], uploaded=True,
                                                publish=data["publish"])
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
