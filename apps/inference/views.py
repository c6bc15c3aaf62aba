from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.inference import selectors, services
from apps.inference.services import DEFAULTS, InferenceError

UID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"  # the page's script puts a generation's uid here


@require_GET
def generate(request):
    """The Generate page: everything after the first paint happens over ws/inference/ (static/js/inference/generate.js)."""
    models = selectors.generate_models(user=request.user)
    chosen = request.GET.get("model")
    current = next((m for m in models if m.slug == chosen), models[0] if models else None)
    boot = {
        "models": [selectors.model_view(m) for m in models], "model": current.slug if current else None,
        "defaults": DEFAULTS, "limits": selectors.limits(),
        "urls": {"ws": "/ws/inference/", "generation": reverse("inference:generation", args=[UID_PLACEHOLDER])},
    }
    return render(request, "inference/generate.html", {
        "models": [{"m": m} for m in models], "current": current, "limits": selectors.limits(), "boot": boot})


@require_GET
def generation_json(request, uid):
    """A generation as stored (tokens and all): the page rebuilds from it when the socket dropped a batch. The uid
    is unguessable, like an unlisted link."""
    generation = selectors.generation_by_uid(uid)
    if generation is None:
        raise Http404
    return JsonResponse(selectors.generation_view(generation))


@require_http_methods(["GET", "POST"])
def api_tokens(request):
    """The API page: how to call /v1, and (signed in) your tokens."""
    new_key = None
    if request.method == "POST":
        try:
            _, new_key = services.api_token_create(user=request.user, name=request.POST.get("name", ""))
        except InferenceError as e:
            messages.error(request, str(e))
    models = selectors.generate_models(user=request.user)
    return render(request, "inference/api.html", {
        "tokens": selectors.api_tokens(user=request.user), "new_key": new_key, "api_url": request.build_absolute_uri("/v1"),
        "example_model": models[0].slug if models else "smollm2-135m-instruct", "limits": selectors.limits(),
    })


@login_required
@require_POST
def api_token_revoke(request, token_id):
    try:
        services.api_token_revoke(token_id=token_id, user=request.user)
    except InferenceError as e:
        messages.error(request, str(e))
    else:
        messages.success(request, "Token revoked: requests with it are refused from now on.")
    return redirect("inference:api")
