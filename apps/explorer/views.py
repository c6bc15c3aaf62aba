"""The explorer's pages: the explorer itself, asking for a trace (an htmx fragment), a trace's status (the
page's slow poll), and the trace file. Each view parses, calls a selector or a service, renders; bad input gets its
message with a 4xx status, never a 500."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.translation import gettext as _, gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from apps.explorer import selectors, services
from apps.explorer.selectors import ExplorerError
from apps.system.limits import client_address
from apps.system.selectors import worker_list

DEFAULT_TEXT = ("ROMEO:\nBut soft, what light through yonder window breaks?\nIt is the east, and Juliet is the sun.")
CAMERAS = ("angle", "front", "side", "top")
CAMERA_LABELS = {"angle": gettext_lazy("angle"), "front": gettext_lazy("front"), "side": gettext_lazy("side"),
                 "top": gettext_lazy("top")}


def _int(value, default: int = 0) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


@require_GET
def page(request):
    ref = request.GET.get("model", "")
    source, problem, status = None, "", 200
    try:
        source = selectors.source_get(ref=ref, user=request.user) if ref else selectors.source_default(user=request.user)
    except ExplorerError as exc:
        problem, status = str(exc), 404
    text, share = request.GET.get("text") or DEFAULT_TEXT, request.GET.get("share", "")
    if share:
        try:
            text = selectors.share_text(key=share)
        except ExplorerError as exc:
            problem, status, share = str(exc), exc.status, ""
    elif len(text) > settings.EXPLORER_MAX_TEXT_CHARS:
        problem, status, text = (_("That link carries %(n)s characters of text, more than the explorer takes "
                                   "(%(limit)s): paste a shorter passage.")
                                 % {"n": f"{len(text):,}", "limit": f"{settings.EXPLORER_MAX_TEXT_CHARS:,}"}), 414, DEFAULT_TEXT
    view = {
        "model": source.ref if source else "",
        "text": text,
        "share": share,
        "layer": _int(request.GET.get("layer")),
        "head": _int(request.GET.get("head")),
        "tok": _int(request.GET.get("tok"), -1) if request.GET.get("tok") else -1,
        "cam": request.GET.get("cam") if request.GET.get("cam") in CAMERAS else "angle",
    }
    checkpoints = selectors.run_checkpoints(run_id=source.run_id, user=request.user) if source and source.run_id else []
    choices = selectors.source_choices(user=request.user)
    context = {
        "choices": choices,
        "picked": _picked(choices, source),
        "source": source,
        "problem": problem,
        "view": view,
        "checkpoints": checkpoints,
        "cameras": [(cam, CAMERA_LABELS[cam]) for cam in CAMERAS],
        "boot": {
            "view": view,
            "source": _source_json(source),
            "checkpoints": [_source_json(c) for c in checkpoints],
            "urls": {"request": reverse("explorer:trace_request"), "page": reverse("explorer:page")},
        },
    }
    return render(request, "explorer/page.html", context, status=status)


@require_POST
def trace_request(request):
    try:
        ref, text = request.POST.get("model", ""), request.POST.get("text", "")
    except RequestDataTooBig:
        return _refused(request, ExplorerError(_("That text is far over the size limit: paste a shorter passage."),
                                               status=413))
    try:
        trace = services.trace_request(ref=ref, text=text, user=request.user, client=client_address(request))
    except ExplorerError as exc:
        return _refused(request, exc)
    share = services.share_for(text=text)
    if not request.htmx:
        return redirect(reverse("explorer:page") + "?" + urlencode({"model": ref, **({"share": share} if share else
                                                                                      {"text": text})}))
    return render(request, "explorer/_trace-live.html", _status_context(trace) | {"share": share})


@require_GET
def trace_status(request, key: str):
    trace = _visible_trace(request, key)
    return render(request, "explorer/_trace-status.html", _status_context(trace))


@require_GET
def trace_data(request, key: str):
    trace = _visible_trace(request, key)
    if trace.status != trace.Status.READY or not trace.file.exists():
        raise Http404("trace not ready")
    response = FileResponse(open(trace.file, "rb"), content_type="application/octet-stream")
    response["Cache-Control"] = "private, max-age=86400, immutable"  # the key names its exact contents
    return response


# ---------------------------------------------------------------------------------------------------------------------


def _visible_trace(request, key: str):
    trace = selectors.trace_get(key=key)
    if trace is None:
        raise Http404("no such trace")
    try:
        selectors.source_get(ref=trace.source, user=request.user)
    except ExplorerError:
        raise Http404("the model of this trace is gone or not yours") from None
    return trace


def _status_context(trace) -> dict:
    context = {"trace": selectors.trace_view(trace)}
    if trace.pending:
        context["no_worker"] = not any("infer" in w.get("queues", []) and w["state"] == "live" for w in worker_list())
    return context


def _refused(request, exc: ExplorerError):
    if request.htmx:
        return render(request, "explorer/_trace-live.html", {"error": str(exc)}, status=exc.status)
    context = {"choices": selectors.source_choices(user=request.user), "problem": str(exc), "view": {},
               "cameras": [(cam, CAMERA_LABELS[cam]) for cam in CAMERAS],
               "boot": {"view": {}, "source": None, "checkpoints": [], "urls": {}}}
    return render(request, "explorer/page.html", context, status=exc.status)


def _picked(choices, source) -> str:
    """The picker's option for the source shown: itself, or for an older checkpoint of a run, the run's entry."""
    if source is None:
        return ""
    options = [s for _, sources in choices for s in sources]
    if any(s.ref == source.ref for s in options):
        return source.ref
    return next((s.ref for s in options if s.kind == "checkpoint" and s.run_id == source.run_id), "")


def _source_json(source) -> dict | None:
    if source is None:
        return None
    return {"ref": source.ref, "label": source.label, "kind": source.kind, "run_id": source.run_id,
            "step": source.step, "config": source.config, "token_limit": source.token_limit, "detail": source.detail,
            "val_loss": source.extra.get("val_loss")}
