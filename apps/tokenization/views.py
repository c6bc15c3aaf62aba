"""Pages of the tokenization app: the playground (and its htmx fragments), the tokenizer library and training form,
a tokenizer's page, the merge explorer and the vocabulary browser. Each view parses, calls a selector or a service,
renders; bad input gets its message with a 4xx status, never a 500."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, RequestDataTooBig, TooManyFieldsSent
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from apps.corpora.selectors import corpus_list
from apps.system.actions import user_action
from apps.system.limits import RateLimited, client_address
from apps.tokenization import merges as merge_explorer, playground as panes, selectors, services, vocabulary
from apps.tokenization.forms import CharForm, TrainForm
from apps.tokenization.selectors import TokenizationError
from apps.tokenization.state import PlaygroundState, state_from
from workers.gpt import tokenizers as toklib

MAX_DECODE_IDS = 500_000


def _form_params(request):
    """request.POST, with Django's size guards turned into a message."""
    try:
        return request.POST
    except RequestDataTooBig:
        raise TokenizationError("The text is over the size limit for one request: upload longer text as a corpus "
                                "on the Data page.", status=413) from None
    except TooManyFieldsSent:
        raise TokenizationError("Too many form fields in one request.") from None


def _limited(request, template: str, context: dict | None = None):
    """A 429 (or 503) response if an anonymous visitor is over the limit, else None."""
    try:
        services.tokenize_rate_limit(user=request.user, client=client_address(request), scope="playground")
    except RateLimited as exc:
        response = render(request, template, (context or {}) | {"error": str(exc)}, status=exc.status)
        response["Retry-After"] = str(exc.retry_after)
        return response
    return None


# ----------------------------------------------------------------------------------------------------------------------
# The playground


def _playground_context(request, state: PlaygroundState) -> dict:
    context = {"state": state, "choices": selectors.tokenizer_choices(user=request.user)}
    if state.tokenizers:
        context |= selectors.playground_panes(text=state.text, names=state.tokenizers, user=request.user,
                                              allow_special=state.allow_special, show_ws=state.show_ws)
    return context


def playground(request):
    if request.GET and (response := _limited(request, "tokenization/playground.html",
                                             {"state": PlaygroundState(), "choices": []})):
        return response
    status = 200
    try:
        state = state_from(request.GET)
        context = _playground_context(request, state)
    except TokenizationError as exc:
        state = PlaygroundState(text="", link_error=str(exc))
        context = _playground_context(request, state)
        status = exc.status
    return render(request, "tokenization/playground.html", context, status=status)


@require_POST
def tokenize(request):
    if response := _limited(request, "tokenization/_results.html"):
        return response
    try:
        state = state_from(_form_params(request))
        context = _playground_context(request, state)
    except TokenizationError as exc:
        return render(request, "tokenization/_results.html", {"error": str(exc)}, status=exc.status)
    return render(request, "tokenization/_results.html", context | {"oob_why": True})


@require_POST
def more(request):
    if response := _limited(request, "tokenization/_window.html"):
        return response
    try:
        params = _form_params(request)
        state = state_from(params)
        index, start, seg = int(params.get("pane", "")), int(params.get("start", "")), int(params.get("seg", ""))
        if not 0 <= index < len(state.tokenizers):
            raise TokenizationError(f"there is no pane {index}")
        window = selectors.playground_window(text=state.text, name=state.tokenizers[index], user=request.user,
                                             allow_special=state.allow_special, show_ws=state.show_ws, start=start,
                                             seg_start=seg)
    except ValueError as exc:  # TokenizationError included; int() of a missing or bad field
        return render(request, "tokenization/_window.html", {"error": str(exc)}, status=getattr(exc, "status", 400))
    return render(request, "tokenization/_window.html", {"pane": {"index": index}, "window": window})


@require_POST
def decode(request):
    if response := _limited(request, "tokenization/_decoded.html"):
        return response
    try:
        params = _form_params(request)
        ids = panes.parse_ids(params.get("ids", ""))
        if not ids:
            raise TokenizationError("Type or paste some token ids, e.g. 15496, 995.")
        if len(ids) > MAX_DECODE_IDS:
            raise TokenizationError(f"{len(ids):,} ids is over the limit of {MAX_DECODE_IDS:,}.", status=413)
        _, tok = selectors.tokenizer_usable(name=params.get("dt", ""), user=request.user)
        result = panes.decode(tok, ids)
        window = panes.segments_window(tok, ids, 0, 0, panes.FIRST_WINDOW, show_ws=False)
    except (ValueError, toklib.TokenizerError) as exc:
        return render(request, "tokenization/_decoded.html", {"error": str(exc)}, status=getattr(exc, "status", 400))
    return render(request, "tokenization/_decoded.html", {"result": result, "window": window, "count": len(ids),
                                                          "tokenizer": tok.name})


# ----------------------------------------------------------------------------------------------------------------------
# The library, training, a tokenizer's page


def library(request):
    corpora = corpus_list(user=request.user)
    context = {"tokenizers": selectors.tokenizer_list(user=request.user),
               "train_form": TrainForm(corpora=corpora, initial=_train_initial(request)),
               "char_form": CharForm(corpora=corpora)}
    return render(request, "tokenization/library.html", context)


def _train_initial(request) -> dict:
    initial = {}
    if corpus_id := request.GET.get("corpus"):
        initial["corpus"] = corpus_id
    return initial


@login_required
@require_http_methods(["GET", "POST"])
def train(request):
    if request.method == "GET":  # a bookmarked or reloaded form address: show the form rather than a bare 405
        return redirect(reverse("tokenization:library") + "#train")
    corpora = corpus_list(user=request.user)
    form = TrainForm(request.POST, corpora=corpora)
    if form.is_valid():
        try:
            row = services.tokenizer_train_create(user=request.user, corpus=form.cleaned_data["corpus"],
                                                  name=form.cleaned_data["name"],
                                                  vocab_size=form.cleaned_data["vocab_size"],
                                                  pattern=form.cleaned_data["pattern"],
                                                  special_tokens=form.cleaned_data["special_tokens"])
            return redirect("tokenization:detail", name=row.name)
        except TokenizationError as exc:
            form.add_error("vocab_size" if "vocabulary" in str(exc) else None, str(exc))
    context = {"tokenizers": selectors.tokenizer_list(user=request.user), "train_form": form,
               "char_form": CharForm(corpora=corpora), "open": "train"}
    return render(request, "tokenization/library.html", context, status=400)


@login_required
@require_POST
def char(request):
    corpora = corpus_list(user=request.user)
    form = CharForm(request.POST, corpora=corpora)
    if form.is_valid():
        try:
            row = services.tokenizer_char_create(corpus=form.cleaned_data["corpus"], name=form.cleaned_data["name"],
                                                 user=request.user)
            messages.success(request, f"Built {row.name}: {row.n_vocab:,} characters, one id each.")
            return redirect("tokenization:detail", name=row.name)
        except TokenizationError as exc:
            form.add_error(None, str(exc))
    context = {"tokenizers": selectors.tokenizer_list(user=request.user), "char_form": form,
               "train_form": TrainForm(corpora=corpora), "open": "char"}
    return render(request, "tokenization/library.html", context, status=400)


def _get_or_404(request, name: str):
    try:
        return selectors.tokenizer_get(name=name, user=request.user)
    except TokenizationError:
        raise Http404 from None


def detail(request, name: str):
    row = _get_or_404(request, name)
    context = {"t": row, "view": selectors.tokenizer_view(row),
               "may_control": selectors.tokenizer_may_control(tokenizer=row, user=request.user)}
    if row.ready:
        try:
            tok = selectors.tokenizer_runtime(tokenizer=row)
            context["info"] = tok.describe()
            if isinstance(tok, toklib.BPETokenizer):
                context["first_merges"] = merge_explorer.merge_table(tok, 7, radius=6, mark=False)
                context["curve"] = merge_explorer.merge_count_curve(tok)
        except toklib.TokenizerError as exc:
            context["load_error"] = str(exc)
    if request.htmx:
        return render(request, "tokenization/_tokenizer-info.html", context)
    return render(request, "tokenization/detail.html", context)


@login_required
@require_POST
def cancel(request, name: str):
    row = _get_or_404(request, name)
    user_action(request, services.tokenizer_cancel, refused=PermissionDenied, tokenizer=row)
    return redirect("tokenization:detail", name=row.name)


@login_required
@require_POST
def delete(request, name: str):
    row = _get_or_404(request, name)
    refused = (PermissionDenied, TokenizationError)
    if not user_action(request, services.tokenizer_delete, refused=refused, tokenizer=row):
        return redirect("tokenization:detail", name=row.name)
    messages.success(request, f"Deleted {name}.")
    return redirect("tokenization:library")


# ----------------------------------------------------------------------------------------------------------------------
# The merge explorer and the vocabulary browser


class _Unusable(Exception):
    pass


def _ready_runtime(request, name: str):
    """The row and runtime of a tokenizer ready to use; a tokenizer still training (or whose files are gone) sends
    the user to its page, which says why."""
    row = _get_or_404(request, name)
    try:
        return row, selectors.tokenizer_usable(name=name, user=request.user)[1]
    except TokenizationError as exc:
        messages.error(request, str(exc))
        raise _Unusable(row.name) from None


def merges(request, name: str):
    try:
        row, tok = _ready_runtime(request, name)
    except _Unusable:
        return redirect("tokenization:detail", name=name)
    context = {"t": row, "tok": tok, "n_merges": tok.n_merges}
    if tok.n_merges == 0:
        return render(request, "tokenization/merges.html", context)
    text = request.GET.get("text")
    if text is None:
        text = _default_sample(row)
    try:
        n = int(request.GET.get("n", tok.n_merges // 20 or 1))
    except ValueError:
        n = 0
    n = max(0, min(n, tok.n_merges))
    context |= {"text": text, "n": n}
    if len(text) > merge_explorer.MERGE_TEXT_MAX_CHARS:
        context["error"] = (f"The sample is {len(text):,} characters; the merge explorer re-runs BPE in Python at "
                            f"every step, so it takes at most {merge_explorer.MERGE_TEXT_MAX_CHARS:,}. Shorten it.")
        status = 413
    else:
        template = "tokenization/_merge-step.html" if request.htmx else "tokenization/merges.html"
        if request.GET and (response := _limited(request, template, context)):
            return response
        context |= {"step": merge_explorer.merge_step(tok, text, n), "table": merge_explorer.merge_table(tok, max(1, n)),
                    "curve": merge_explorer.merge_count_curve(tok, marker_n=n)}
        status = 200
    template = "tokenization/_merge-step.html" if request.htmx else "tokenization/merges.html"
    return render(request, template, context, status=status)


def _default_sample(row) -> str:
    if row.corpus is not None and row.corpus.file.exists():
        with open(row.corpus.file, "rb") as f:
            return f.read(400).decode("utf-8", errors="ignore").rsplit("\n", 1)[0]
    return "The tokenizer learns to glue frequent neighbours together: the, and, ing, tion. Watch them fuse!"


def vocab(request, name: str):
    try:
        row, tok = _ready_runtime(request, name)
    except _Unusable:
        return redirect("tokenization:detail", name=name)
    try:
        page = int(request.GET.get("page", 1))
    except ValueError:
        page = 1
    result = vocabulary.vocab_search(tok, request.GET.get("q", "")[:200], page=page,
                                   partial_only=request.GET.get("partial") == "1")
    context = {"t": row, "tok": tok, "result": result, "partial": request.GET.get("partial") == "1"}
    template = "tokenization/_vocab-rows.html" if request.htmx else "tokenization/vocab.html"
    return render(request, template, context)
