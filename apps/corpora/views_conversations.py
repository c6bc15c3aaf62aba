"""Pages of the conversation kind of data set: upload a JSONL file, a set's page (statistics, the split), and the
loss-mask preview (a conversation through a model's chat template, every token trained on or masked)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from apps.corpora import conversations
from apps.corpora.forms import ConversationPreviewForm, ConversationUploadForm
from apps.corpora.text import CorpusInputError
from apps.registry.models import Model
from apps.registry.selectors import model_tokenizer
from apps.registry.services import RegistryError

SLACK_BYTES = 1024 * 1024


@login_required
def upload(request):
    limit = settings.CORPUS_MAX_BYTES
    if request.method != "POST":
        return render(request, "corpora/upload-conversations.html", {"form": ConversationUploadForm(), "limit": limit})
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + SLACK_BYTES:  # refuse before reading the body
        return _error(request, ConversationUploadForm(), CorpusInputError(
            _("The upload is %(size).1f MB, over the limit of %(limit).1f MB for a data set: upload fewer "
              "conversations.") % {"size": length / 2**20, "limit": limit / 2**20}, status=413))
    form = ConversationUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return render(request, "corpora/upload-conversations.html", {"form": form, "limit": limit}, status=400)
    d = form.cleaned_data
    try:
        corpus = conversations.conversations_create(name=d["name"], description=d["description"], owner=request.user,
                                                    data=d["file"].read(), val_fraction=d["val_percent"] / 100)
    except CorpusInputError as exc:
        return _error(request, form, exc)
    messages.success(request, _("Uploaded %(name)s: %(n)s conversations.")
                     % {"name": corpus.name, "n": corpus.stats["n_conversations"]})
    return redirect("corpora:detail", corpus_id=corpus.id)


def _error(request, form, exc: CorpusInputError):
    return render(request, "corpora/upload-conversations.html",
                  {"form": form, "limit": settings.CORPUS_MAX_BYTES, "error": str(exc),
                   "error_lines": getattr(exc, "lines", [])}, status=exc.status)


def preview_models(user):
    """The models whose templates the preview offers: what the user may use, chat models first."""
    return Model.objects.usable_by(user).order_by("-chat_template", "name")


def detail_context(request, corpus) -> dict:
    models = preview_models(request.user)
    form = ConversationPreviewForm(initial={"model": models.first(), "index": 0}, models=models)
    preview, error = (_preview(corpus, models.first(), 0) if models.exists()
                      else (None, _("No model is available to preview with: import or promote one first.")))
    return {"corpus": corpus, "stats": corpus.stats, "preview_form": form, "preview": preview,
            "preview_error": error, "model": models.first()}


def preview(request, corpus, status: int = 200):
    """The #conversation-preview fragment (or the whole page without htmx) for ?model=<slug>&index=<n>."""
    models = preview_models(request.user)
    form = ConversationPreviewForm(request.GET, models=models)
    if form.is_valid():
        model, index = form.cleaned_data["model"], form.cleaned_data.get("index") or 0
        result, error = _preview(corpus, model, index)
    else:
        model, result, status = None, None, 400
        error = " ".join(str(e) for errors in form.errors.values() for e in errors)
    if error and result is None and status == 200:
        status = 400
    context = {"corpus": corpus, "stats": corpus.stats, "preview_form": form, "preview": result,
               "preview_error": error, "model": model}
    template = "corpora/_conversation-preview.html" if request.htmx else "corpora/conversations.html"
    return render(request, template, context, status=status)


def _preview(corpus, model, index: int):
    try:
        messages_ = conversations.conversation_get(corpus=corpus, index=index)
        result = conversations.conversation_preview(messages=messages_, tokenizer=model_tokenizer(model),
                                                    chat_template=model.chat_template)
    except (CorpusInputError, RegistryError) as exc:
        return None, str(exc)
    result |= {"index": index, "messages": messages_, "split": "val" if index >= corpus.stats.get("n_train", 0)
               else "train"}
    return result, None
