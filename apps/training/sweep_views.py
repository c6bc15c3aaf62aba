"""The sweep pages: the form with its grid preview, the sweep's page (live), its fit as JSON, the prediction run."""

from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.system.actions import user_action
from apps.training import sweeps
from apps.training.services import TrainingError
from apps.training.sweep_forms import SweepForm
from workers.gpt import scaling


@login_required
@require_http_methods(["GET", "POST"])
def sweep_new(request):
    if request.method == "POST":
        form = SweepForm(request.POST, user=request.user)
        if form.is_valid():
            try:
                sweep = sweeps.sweep_create(owner=request.user, **_plan_args(form), name=form.cleaned_data["name"])
                return redirect("training:sweep", sweep_id=sweep.pk)
            except TrainingError as exc:
                form.add_error(exc.field if exc.field in form.fields else None, str(exc))
    else:
        form = SweepForm(initial=SweepForm.initial_for(preset_key=request.GET.get("preset", ""), user=request.user),
                         user=request.user)
    probe = form if form.is_bound else SweepForm({k: v for k, v in form.initial.items() if v is not None},
                                                 user=request.user)
    context = {"form": form, "presets": scaling.SWEEP_PRESETS.values()} | _preview_context(probe)
    return render(request, "training/sweep_new.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def sweep_preview(request):
    """The grid the form would launch (htmx posts the form here as it changes): the #sweep-grid partial."""
    context = _preview_context(SweepForm(request.POST, user=request.user))
    return render(request, "training/_sweep-grid.html", context, status=200)


@require_GET
def sweep(request, sweep_id: int):
    sweep = _visible(request, sweep_id)
    summary = sweeps.sweep_summary(sweep=sweep)
    template = "training/_sweep-results.html" if request.htmx else "training/sweep.html"
    return render(request, template, {"sweep": sweep, "s": summary,
                                      "may_control": sweeps.run_may_control(run=sweep, user=request.user)})


@require_GET
def sweep_fit(request, sweep_id: int):
    """The points and the fits, for the charts (and for notebooks)."""
    summary = sweeps.sweep_summary(sweep=_visible(request, sweep_id))
    return JsonResponse({k: summary[k] for k in ("status", "points", "fit", "prediction", "outcome", "forecast",
                                                   "next_budget", "chinchilla")})


@login_required
@require_POST
def sweep_predict(request, sweep_id: int):
    sweep = _visible(request, sweep_id)
    user_action(request, sweeps.sweep_predict, refused=TrainingError, sweep=sweep)
    return redirect("training:sweep", sweep_id=sweep.pk)


# ----------------------------------------------------------------------------------------------------------------------


def _visible(request, sweep_id):
    try:
        return sweeps.sweep_get(sweep_id=sweep_id, user=request.user)
    except sweeps.SweepNotFound:
        raise Http404


def _plan_args(form: SweepForm) -> dict:
    d = form.cleaned_data
    return {"corpus": d["corpus"], "tokenizer": d["tokenizer"], "preset_key": d["preset"], "budgets": d["budgets"],
            "per_budget": d["per_budget"]}


def _preview_context(form: SweepForm) -> dict:
    if not form.is_valid():
        errors = [str(e) for errs in form.errors.values() for e in errs]
        return {"plan": None, "errors": errors}
    try:
        plan = sweeps.sweep_plan(user=form.user, **_plan_args(form))
    except TrainingError as exc:
        return {"plan": None, "errors": [str(exc)]}
    return {"plan": plan, "errors": [], "max_runs": sweeps.max_runs()}
