from django.conf import settings
from django.contrib.auth import login
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from apps.system import selectors
from apps.system.forms import SignUpForm
from apps.system.steps import journey


def home(request):
    steps = journey()
    progress = selectors.journey_progress(user=request.user)
    for step in steps:
        step["mine"] = progress.get(step["key"])
    # "Start here" marks the step after the furthest one the person has reached; a newcomer's is the first.
    reached = [i for i, step in enumerate(steps) if step["mine"]]
    start = steps[min(reached[-1] + 1, len(steps) - 1)] if reached else steps[0]
    return render(request, "system/home.html", {"steps": steps, "start": start, "progress": progress})


def status(request):
    context = {"workers": selectors.worker_list(), "health": selectors.health(), "gone_after": settings.WORKER_GONE_SECONDS}
    if request.htmx:
        return render(request, "system/_workers.html", context)
    return render(request, "system/status.html", context)


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect("system:home")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user)
        return redirect("system:home")
    return render(request, "registration/signup.html", {"form": form}, status=400 if form.errors else 200)


def not_found(request, exception=None):
    return render(request, "404.html", status=404)


def server_error(request):
    return render(request, "500.html", status=500)
