"""The "Fine-tune a model" page: the form, its estimate, and the submit that queues a run of kind sft."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.training.finetune import sft_run_create
from apps.training.forms_sft import FinetuneForm


@login_required
@require_http_methods(["GET", "POST"])
def finetune(request):
    if request.method == "POST":
        form = FinetuneForm(request.POST, user=request.user)
        if form.is_valid():
            run = sft_run_create(owner=request.user, plan=form.plan, name=form.cleaned_data["name"])
            return redirect("training:run", run_id=run.pk)
        estimate = form.estimate()
    else:
        initial = FinetuneForm.initial_for(user=request.user, base=request.GET.get("base", ""))
        form = FinetuneForm(initial=initial, user=request.user)
        probe = FinetuneForm(initial, user=request.user)  # the estimate of the defaults, shown at once
        estimate = probe.estimate() if initial.get("base_model") and probe.is_valid() else None
    status = 400 if form.is_bound and form.errors else 200
    return render(request, "training/finetune.html", {"form": form, "estimate": estimate}, status=status)
