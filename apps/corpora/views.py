"""Pages of the corpora app: the list, the upload form, a corpus's page (statistics, preview, split, token shards),
and its htmx fragments. Each view parses, calls a selector or a service, renders; bad input gets its message."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFilesSent
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django.utils.translation import gettext_lazy as _

from apps.corpora import selectors, services, views_conversations
from apps.corpora.forms import EncodeForm, SplitForm, UploadForm
from apps.corpora.models import Corpus, Shards
from apps.corpora.text import CorpusInputError
from apps.tokenization.selectors import tokenizer_list

SLACK_BYTES = 1024 * 1024  # multipart framing and form fields on top of the text itself


def _corpus_or_404(request, corpus_id: int) -> Corpus:
    try:
        return selectors.corpus_get(corpus_id=corpus_id, user=request.user)
    except Corpus.DoesNotExist:
        raise Http404 from None


def corpus_list(request):
    return render(request, "corpora/list.html", {"groups": selectors.corpus_groups(user=request.user)})


@login_required
def upload(request):
    limit = settings.CORPUS_MAX_BYTES
    if request.method != "POST":
        return render(request, "corpora/upload.html", {"form": UploadForm(), "limit": limit})
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit + SLACK_BYTES:  # refuse before reading the body
        return _upload_error(request, UploadForm(), CorpusInputError(
            _("The upload is %(size).1f MB, over the limit of %(limit).1f MB for a corpus. Upload less text.")
            % {"size": length / 1024 / 1024, "limit": limit / 1024 / 1024}, status=413))
    try:
        form = UploadForm(request.POST)
        uploads = [services.Upload(f.name, f.read()) for f in request.FILES.getlist("files")]
    except RequestDataTooBig:
        mb = settings.DATA_UPLOAD_MAX_MEMORY_SIZE / 1024 / 1024
        return _upload_error(request, UploadForm(), CorpusInputError(
            _("Pasted text is limited to %(mb).0f MB: save it as a .txt file and upload the file instead (up to "
              "%(limit).0f MB).") % {"mb": mb, "limit": limit / 1024 / 1024}, status=413))
    except TooManyFilesSent:
        return _upload_error(request, UploadForm(), CorpusInputError(_("Too many files at once: upload at most 100.")))
    if not form.is_valid():
        return render(request, "corpora/upload.html", {"form": form, "limit": limit}, status=400)
    try:
        corpus = services.corpus_create(name=form.cleaned_data["name"], description=form.cleaned_data["description"],
                                        owner=request.user, uploads=uploads, text=form.cleaned_data["text"])
    except CorpusInputError as exc:
        return _upload_error(request, form, exc)
    messages.success(request, _("Uploaded %(name)s: %(n)s characters.") % {"name": corpus.name,
                                                                            "n": f"{corpus.n_chars:,}"})
    return redirect("corpora:detail", corpus_id=corpus.id)


def _upload_error(request, form, exc: CorpusInputError):
    form.is_bound and form.is_valid()  # keep what the user typed, with its own field errors
    return render(request, "corpora/upload.html", {"form": form, "limit": settings.CORPUS_MAX_BYTES,
                                                   "error": str(exc)}, status=exc.status)


# the character classes of apps/corpora/text.py, as a reader names them
CLASS_LABELS = {"letters": _("letters"), "digits": _("digits"), "punctuation": _("punctuation"),
                "symbols": _("symbols"), "whitespace": _("whitespace"), "other": _("other")}


def _detail_context(request, corpus: Corpus, **extra) -> dict:
    tokenizers = tokenizer_list(user=request.user, ready_only=True)
    may_edit = selectors.corpus_may_edit(corpus=corpus, user=request.user)
    return {
        "corpus": corpus,
        "stats": corpus.stats,
        "classes": [(name, CLASS_LABELS.get(name, name), n) for name, n in corpus.stats.get("classes", {}).items()],
        "bytes_per_char": corpus.size_bytes / corpus.n_chars if corpus.n_chars else None,
        "split": corpus.split,
        "preview": selectors.corpus_preview(corpus=corpus),
        "split_preview": selectors.corpus_split_preview(corpus=corpus),
        "shards": [selectors.shards_view(s) for s in selectors.shards_list(corpus=corpus)],
        "may_edit": may_edit,
        "split_form": SplitForm(initial={"val_percent": round(corpus.val_fraction * 100, 2)}),
        "encode_form": EncodeForm(tokenizers=tokenizers, initial={"tokenizer": tokenizers.filter(name="gpt2").first()}),
        "tokenizers_from_it": corpus.tokenizers.all(),
        "user_id": request.user.id,
        "is_staff": request.user.is_staff,
    } | extra


def detail(request, corpus_id: int):
    corpus = _corpus_or_404(request, corpus_id)
    if corpus.kind == Corpus.Kind.TASKS:
        from apps.corpora.taskset_views import taskset_detail

        return taskset_detail(request, corpus)
    if corpus.kind == Corpus.Kind.CONVERSATIONS:
        return render(request, "corpora/conversations.html", views_conversations.detail_context(request, corpus))
    return render(request, "corpora/detail.html", _detail_context(request, corpus))


def preview(request, corpus_id: int):
    corpus = _corpus_or_404(request, corpus_id)
    if corpus.kind == Corpus.Kind.CONVERSATIONS:
        return views_conversations.preview(request, corpus)
    try:
        offset = int(request.GET.get("offset", 0))
    except ValueError:
        offset = 0
    return render(request, "corpora/_preview.html", {"corpus": corpus,
                                                     "preview": selectors.corpus_preview(corpus=corpus, offset=offset)})


@login_required
@require_POST
def split(request, corpus_id: int):
    corpus = _corpus_or_404(request, corpus_id)
    form = SplitForm(request.POST)
    error, status = None, 200
    if form.is_valid():
        try:
            corpus = services.corpus_set_split(corpus=corpus, val_fraction=form.cleaned_data["val_percent"] / 100,
                                               user=request.user)
        except (CorpusInputError, PermissionDenied) as exc:
            error, status = str(exc), getattr(exc, "status", 403)
    else:
        status = 400
    context = _detail_context(request, corpus, split_error=error)
    if not form.is_valid():
        context["split_form"] = form
    if request.htmx:
        return render(request, "corpora/_split.html", context, status=status)
    return render(request, "corpora/detail.html", context, status=status)


@login_required
@require_POST
def encode(request, corpus_id: int):
    corpus = _corpus_or_404(request, corpus_id)
    form = EncodeForm(request.POST, tokenizers=tokenizer_list(user=request.user, ready_only=True))
    error, notice, status = None, None, 200
    if form.is_valid():
        try:
            shards = services.shards_ensure(corpus_id=corpus.id, tokenizer_id=form.cleaned_data["tokenizer"].id,
                                            user=request.user)
            if shards.status == "succeeded":
                notice = _("Already encoded with %(name)s: the cached shards are reused (same text, same "
                           "tokenizer, same split).") % {"name": shards.tokenizer.name}
        except CorpusInputError as exc:
            error, status = str(exc), exc.status
    else:
        error, status = _("Choose a tokenizer that has finished training."), 400
    context = _detail_context(request, corpus, encode_error=error, encode_notice=notice)
    if request.htmx:
        return render(request, "corpora/_shards.html", context, status=status)
    return render(request, "corpora/detail.html", context, status=status)


@login_required
@require_POST
def shards_cancel(request, shards_id: int):
    try:
        shards = Shards.objects.select_related("corpus").get(id=shards_id)
    except Shards.DoesNotExist:
        raise Http404 from None
    corpus = _corpus_or_404(request, shards.corpus_id)
    try:
        services.shards_cancel(shards=shards, user=request.user)
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return render(request, "corpora/_shards.html", _detail_context(request, corpus))
    return redirect("corpora:detail", corpus_id=corpus.id)


@login_required
@require_POST
def delete(request, corpus_id: int):
    corpus = _corpus_or_404(request, corpus_id)
    try:
        services.corpus_delete(corpus=corpus, user=request.user)
    except (PermissionDenied, CorpusInputError) as exc:
        messages.error(request, str(exc))
        return redirect("corpora:detail", corpus_id=corpus.id)
    messages.success(request, _("Deleted %(name)s.") % {"name": corpus.name})
    return redirect("corpora:list")
