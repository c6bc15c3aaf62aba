from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.system.devices import describe_device
from apps.training import realtime, selectors, services
from apps.training.forms import ADVANCED_FIELDS, ForkForm, RunForm
from apps.training.presets import DEFAULT_PRESET, PRESETS
from apps.training.selectors import RunNotFound
from apps.training.services import TrainingError
from apps.training.sweeps import sweep_list
from workers.gpt.config import ConfigError

COMPARE_MAX_RUNS = 8


@require_GET
def runs(request):
    runs = list(selectors.run_list(user=request.user)[:200])
    context = {"runs": runs, "presets": PRESETS.values(), "polling": any(r.is_active for r in runs),
               "sweeps": sweep_list(user=request.user)[:20]}
    return render(request, "training/runs.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def new(request):
    if request.method == "POST":
        form = RunForm(request.POST, user=request.user)
        if form.is_valid():
            model_config, train_config = form.configs()
            d = form.cleaned_data
            run = services.run_create(
                owner=request.user, corpus=d["corpus"], tokenizer=d["tokenizer"], model_config=model_config,
                train_config=train_config, name=d["name"], preset=d["preset"],
                data=_data_snapshot(form))
            return redirect("training:run", run_id=run.pk)
        probe = form
    else:
        initial = RunForm.initial_for(preset_key=request.GET.get("preset", DEFAULT_PRESET), user=request.user)
        form = RunForm(initial=initial, user=request.user)
        probe = RunForm(_as_data(initial), user=request.user)  # the estimates for the preset, shown at once
        probe.is_valid()
    context = {"form": form, "presets": PRESETS.values(), "advanced": ADVANCED_FIELDS,
               "advanced_open": form.is_bound and any(f in form.errors for f in ADVANCED_FIELDS),
               "current_preset": form["preset"].value()}
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "training/new.html", context | _estimate_context(probe), status=status)


@login_required
@require_POST
def estimate(request):
    """The live estimates beside the form (htmx posts the form here as it changes)."""
    form = RunForm(request.POST, user=request.user)
    form.is_valid()
    return render(request, "training/_estimates.html", _estimate_context(form))


def run(request, run_id: int):
    run = _visible_run(request, run_id)
    context = _run_context(request, run)
    if run.kind == run.Kind.GRPO:
        from apps.training.grpo_views import run_grpo

        return run_grpo(request, run, context)
    context["history"] = selectors.run_history(run=run)
    context["chart"] = selectors.run_chart_config(run=run)
    return render(request, "training/run.html", context)


def run_panel(request, run_id: int):
    """The parts of the dashboard that templates draw (header with actions, checkpoints, timeline, queue): htmx
    fetches them again when the socket says the run changed."""
    run = _visible_run(request, run_id)
    return render(request, "training/_panel.html", _run_context(request, run) | {"oob": True})


@login_required
@require_POST
def cancel(request, run_id: int):
    run = _visible_run(request, run_id)
    try:
        services.run_cancel(run=run, user=request.user)
    except TrainingError as exc:
        messages.error(request, str(exc))
    return _back_to_run(request, run)


@login_required
@require_POST
def resume(request, run_id: int):
    run = _visible_run(request, run_id)
    try:
        services.run_resume(run=run, user=request.user)
    except TrainingError as exc:
        messages.error(request, str(exc))
    return _back_to_run(request, run)


@login_required
@require_http_methods(["GET", "POST"])
def fork(request, checkpoint_id: int):
    try:
        checkpoint = selectors.checkpoint_get(checkpoint_id=checkpoint_id, user=request.user)
    except RunNotFound:
        raise Http404
    parent = checkpoint.run
    initial = services.fork_settings(parent)
    initial["max_steps"] = max(initial["max_steps"], checkpoint.step * 2)
    form = ForkForm(request.POST or None, initial=initial, fields=services.fork_fields(parent))
    if request.method == "POST" and form.is_valid():
        try:
            child = services.run_fork(checkpoint=checkpoint, user=request.user, changes=form.changes(),
                                      name=form.cleaned_data["name"])
            return redirect("training:run", run_id=child.pk)
        except (TrainingError, ConfigError) as exc:
            form.add_error(exc.field if getattr(exc, "field", None) in form.fields else None, str(exc))
    status = 400 if form.errors else 200
    return render(request, "training/fork.html", {"form": form, "checkpoint": checkpoint, "parent": parent},
                  status=status)


@require_GET
def compare(request):
    ids = request.GET.getlist("run")[:COMPARE_MAX_RUNS]
    runs = []
    for run_id in ids:
        try:
            runs.append(selectors.run_get(run_id=run_id, user=request.user))
        except RunNotFound:
            messages.error(request, f"Run #{str(run_id)[:20]} is not one you can see; it is left out.")
    series = [{"chart": selectors.run_chart_config(run=r), "history": selectors.run_history(run=r, max_points=2000)}
              for r in runs]
    context = {"runs": runs, "series": series, "table": selectors.run_compare(runs=runs),
               "choices": selectors.run_list(user=request.user)[:100], "selected": [r.pk for r in runs]}
    return render(request, "training/compare.html", context)


@require_GET
def metrics(request, run_id: int):
    """The run's full history as JSON (steps and evaluations, field names included): for notebooks and scripts."""
    run = _visible_run(request, run_id)
    history = selectors.run_history(run=run, max_points=None)
    return JsonResponse({"run": run.pk, "name": run.name, "status": run.status,
                         "step_fields": realtime.METRIC_FIELDS, "eval_fields": realtime.EVAL_FIELDS, **history})


# ----------------------------------------------------------------------------------------------------------------------


def _visible_run(request, run_id):
    try:
        return selectors.run_get(run_id=run_id, user=request.user)
    except RunNotFound:
        raise Http404


def _run_context(request, run) -> dict:
    return {
        "run": run,
        "may_control": services.run_may_control(run=run, user=request.user),
        "queue": selectors.run_queue_position(run=run),
        "checkpoints": selectors.run_checkpoints(run=run),
        "events": selectors.run_events(run=run),
        "progress": selectors.run_progress(run=run),
        "device": describe_device(run.device) if run.device else "",
        "preset": PRESETS.get(run.preset),
    }


def _back_to_run(request, run):
    return redirect("training:run", run_id=run.pk)


def _estimate_context(form: RunForm) -> dict:
    errors = []
    if form.is_bound:
        for field, field_errors in form.errors.items():
            label = field if field != "__all__" else ""
            errors.extend({"field": label, "message": e} for e in field_errors)
    return {"estimate": form.estimate, "errors": errors, "warnings": form.warnings, "data_info": form.data_info}


def _data_snapshot(form: RunForm) -> dict:
    d, info = form.cleaned_data, form.data_info
    return {"corpus": d["corpus"].name, "tokenizer": d["tokenizer"].name, "n_vocab": info.n_vocab,
            "train_tokens": info.train_tokens, "val_tokens": info.val_tokens, "exact": info.exact}


def _as_data(initial: dict) -> dict:
    """Initial values as a browser would post them (unchecked boxes are absent)."""
    return {k: v for k, v in initial.items() if v is not None and v is not False}
