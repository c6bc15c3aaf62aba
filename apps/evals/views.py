from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from apps.evals import selectors, services
from apps.evals.selectors import EvalError
from apps.registry.models import Model

ANSWERS_PER_PAGE = 100


def _model(request, slug) -> Model:
    model = Model.objects.visible_to(request.user).filter(slug=slug).first()
    if model is None:
        raise Http404(_("There is no model %(slug)r (or it is not published).") % {"slug": slug})
    return model


def _evaluation(request, evaluation_id):
    try:
        return selectors.evaluation_get(evaluation_id=evaluation_id, user=request.user)
    except EvalError:
        raise Http404 from None


def _section(request, model, *, status=200, error=None, values=None):
    context = selectors.model_section(model=model, user=request.user) | {"error": error, "values": values or {}}
    return render(request, "evals/_evaluations.html", context, status=status)


@require_GET
def model_evaluations(request, slug):
    """The Evaluations section of a model's page, alone (htmx refreshes it)."""
    return _section(request, _model(request, slug))


@require_POST
def evaluation_new(request, slug):
    model = _model(request, slug)
    p = request.POST
    kind, _sep, ref = p.get("dataset", "").partition(":")
    try:
        services.evaluation_create(
            user=request.user, model=model, method=p.get("method", ""),
            corpus=ref if kind == "corpus" else None, benchmark=ref if kind == "benchmark" else None,
            split=p.get("split", ""), n=p.get("n", ""), k=p.get("k") or 1,
            max_new_tokens=p.get("max_new_tokens") or 64)
    except EvalError as e:
        if request.htmx:
            return _section(request, model, status=e.status, error=str(e), values=p)
        messages.error(request, str(e))
        return redirect(reverse("registry:detail", args=[model.slug]) + "#evaluations")
    if request.htmx:
        return _section(request, model)
    messages.success(request, _("Evaluation queued: an infer worker scores it; follow it below."))
    return redirect(reverse("registry:detail", args=[model.slug]) + "#evaluations")


@require_POST
def lineage_fill(request, slug):
    """Queue the evaluations missing from a model's lineage table; back to where the form was."""
    model = _model(request, slug)
    if not selectors.may_evaluate(model=model, user=request.user):
        messages.error(request, _("Sign in to run evaluations."))
    else:
        queued, refused = services.lineage_fill(user=request.user, model=model)
        messages.success(request, _("Queued %(n)s evaluation(s).") % {"n": len(queued)})
        for reason in refused:
            messages.error(request, reason)
    back = request.POST.get("next", "")
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("registry:detail", args=[model.slug]) + "#evaluations"
    return redirect(back)


@require_GET
def evaluation_detail(request, evaluation_id):
    e = _evaluation(request, evaluation_id)
    return render(request, "evals/evaluation.html", {
        "evaluation": e, "e": selectors.evaluation_view(e), **_answers_context(request, e),
        "may_control": selectors.evaluation_may_control(evaluation=e, user=request.user),
        "user_id": request.user.id, "is_staff": request.user.is_staff,
    })


@require_GET
def evaluation_answers(request, evaluation_id):
    """The answers browser alone (#answers): filtered right / wrong, a page at a time."""
    e = _evaluation(request, evaluation_id)
    return render(request, "evals/_answers.html", {"evaluation": e, **_answers_context(request, e)})


def _answers_context(request, e) -> dict:
    show = request.GET.get("show", "all")
    show = show if show in ("all", "right", "wrong") else "all"
    rows = selectors.evaluation_answers(evaluation=e, show=show)
    try:
        page = max(1, int(request.GET.get("page", 1)))
    except ValueError:
        page = 1
    pages = max(1, -(-len(rows) // ANSWERS_PER_PAGE))
    page = min(page, pages)
    return {"answers": rows[(page - 1) * ANSWERS_PER_PAGE:page * ANSWERS_PER_PAGE], "show": show, "page": page,
            "pages": pages, "n_answers": len(rows)}


@require_POST
def evaluation_cancel(request, evaluation_id):
    e = _evaluation(request, evaluation_id)
    try:
        services.evaluation_cancel(evaluation=e, user=request.user)
    except EvalError as err:
        messages.error(request, str(err))
    back = request.POST.get("next", "")
    if not back.startswith("/") or back.startswith("//"):
        back = reverse("evals:detail", args=[e.pk])
    return redirect(back)
