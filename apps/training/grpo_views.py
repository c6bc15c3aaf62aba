"""Pages of GRPO runs: the "Reinforce with GRPO" form with its per-worker estimate, and the GRPO dashboard's
fragments. The run page itself is training:run, which renders training/run_grpo.html for kind grpo."""

import logging

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.training import grpo, selectors
from apps.training.grpo_forms import GRPOForm
from apps.training.selectors import RunNotFound
from apps.training.services import TrainingError
from workers.gpt.config import ConfigError
from workers.gpt.grpo_config import GRPOConfig
from apps.registry.models import Model

log = logging.getLogger(__name__)

PROMPT_TOKENS_GUESS = 80  # a chat-templated task prompt, for the estimate when the prompts cannot be tokenized


@login_required
@require_http_methods(["GET", "POST"])
def grpo_new(request):
    if request.method == "POST":
        form = GRPOForm(request.POST, user=request.user)
        if form.is_valid():
            d = form.cleaned_data
            try:
                run = grpo.grpo_run_create(owner=request.user, base_model=d["base_model"], corpus=d["corpus"],
                                           grpo_config=form.grpo_config(), lora=d["lora"], name=d["name"])
                return redirect("training:run", run_id=run.pk)
            except (TrainingError, ConfigError) as exc:
                form.add_error(exc.field if getattr(exc, "field", None) in form.fields else None, str(exc))
    else:
        form = GRPOForm(initial=_initial(request), user=request.user)
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "training/grpo_new.html", {"form": form} | _estimates(form), status=status)


@login_required
@require_POST
def grpo_estimate(request):
    """The estimate beside the form, posted by htmx as the form changes."""
    form = GRPOForm(request.POST, user=request.user)
    form.is_valid()
    return render(request, "training/_grpo-estimates.html", _estimates(form))


@require_GET
def rollouts(request, run_id: int):
    """The answers panel: the sampled groups of the run's recent steps."""
    run = _visible_run(request, run_id)
    return render(request, "training/_grpo-rollouts.html", {"rollouts": grpo.rollout_list(run=run)})


@require_GET
def heldout(request, run_id: int):
    """The held-out panel (before / after evaluations), polled by htmx while they or the run are active."""
    run = _visible_run(request, run_id)
    return render(request, "training/_grpo-heldout.html", {"run": run, "heldout": grpo.heldout_views(run=run)})


def _visible_run(request, run_id: int):
    try:
        return selectors.run_get(run_id=run_id, user=request.user)
    except RunNotFound:
        raise Http404 from None


def _initial(request) -> dict:
    """SmolLM2-135M-Instruct itself, not the newest of its descendants (SmolLM2-135M-Instruct-grpo, ...)."""
    initial = {}
    usable = Model.objects.usable_by(request.user)
    smol = (usable.filter(name="SmolLM2-135M-Instruct").first()
            or usable.filter(name__icontains="SmolLM2-135M-Instruct").order_by("created", "id").first())
    if smol is not None:
        initial["base_model"] = smol.pk
    if request.GET.get("corpus", "").isdigit():
        initial["corpus"] = int(request.GET["corpus"])
    return initial


def _estimates(form: GRPOForm) -> dict:
    if not form.is_bound or form.errors:
        return {"grpo_estimates": [], "estimate_errors": [str(e) for errs in form.errors.values() for e in errs]}
    d = form.cleaned_data
    cfg = GRPOConfig.from_dict(form.grpo_config())
    try:
        prompt_tokens = grpo.prompt_tokens(model=d["base_model"], corpus=d["corpus"])
    except (OSError, ValueError, LookupError):  # a tokenizer or task file gone: the run says so at launch
        log.warning("no prompt lengths for the GRPO estimate", exc_info=True)
        prompt_tokens = PROMPT_TOKENS_GUESS
    rows = grpo.grpo_estimate(model_config=d["base_model"].config, grpo_config=cfg,
                              prompt_tokens=prompt_tokens or PROMPT_TOKENS_GUESS, workers=selectors.train_workers(),
                              lora=d["lora"])
    return {"grpo_estimates": rows, "estimate_errors": []}


def run_grpo(request, run, context: dict):
    """training:run for a GRPO run (called by views.run)."""
    context = context | {"grpo_history": grpo.grpo_history(run=run), "rollouts": grpo.rollout_list(run=run),
                         "grpo_config": run.train_config.get("grpo", {})}
    return render(request, "training/run_grpo.html", context)
