"""The OpenAI-compatible HTTP API, so existing clients (the `openai` package, curl, tools that take a base URL) work
against a user's own models:

    GET  /v1/models
    POST /v1/completions          {"model", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed",
                                   "stream", "logprobs", ...}
    POST /v1/chat/completions     {"model", "messages", "max_tokens", ..., "logprobs": true, "top_logprobs": 5}

Also accepted, as vLLM and llama.cpp's server accept them: top_k, min_p, repetition_penalty. Errors are OpenAI's
shape, {"error": {"message", "type", "param", "code"}}, never an HTML page.

The web process runs no model: a request becomes a Generation, an infer worker streams it to the generation's
channel-layer group, and this view listens there (joining before the worker starts, so nothing is missed) and
answers as JSON or as server-sent events. A client that hangs up mid-stream stops the generation and frees the worker.
Published models need no key (anonymous use is rate-limited; any api_key a client insists on sending will do);
a user's own unpublished models need one of their tokens: `Authorization: Bearer lab-...`.

Three files: openai.py maps OpenAI's JSON to our settings and our records back (pure), listen.py waits for the
generation's events, and this one holds the views.
"""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from apps.inference import openai, realtime, services
from apps.inference.listen import FAILED, FINAL, SILENT, TOKENS, Listener, generation_events
from apps.inference.models import Generation
from apps.inference.services import InferenceError
from apps.registry.models import Model
from apps.system.limits import client_address


def error_response(message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(openai.error_body(message, status=status, param=param, code=code), status=status)
    for k, v in (headers or {}).items():
        response[k] = v
    return response


def _error(e: InferenceError) -> JsonResponse:
    headers = {"Retry-After": str(e.retry_after)} if e.retry_after else None
    return error_response(str(e), status=e.status, param=e.param, code=e.code, headers=headers)


def _user(request):
    """The API key's user; anonymous (request.user, usually AnonymousUser) when no key of ours is sent."""
    header = request.headers.get("Authorization", "")
    key = header[7:].strip() if header.lower().startswith("bearer ") else ""
    return services.api_token_user(key=key) or request.user


# ----------------------------------------------------------------------------------------------------------------------
# GET /v1/models


@csrf_exempt
async def models(request):
    if request.method != "GET":
        return error_response("use GET /v1/models", status=405)
    try:
        user = await sync_to_async(_user)(request)
    except InferenceError as e:
        return _error(e)
    rows = await sync_to_async(lambda: list(Model.objects.usable_by(user).select_related("owner")))()
    data = [{"id": m.slug, "object": "model", "created": int(m.created.timestamp()),
             "owned_by": m.owner.username if m.owner else "llm-lab", "name": m.name, "status": m.status,
             "context_length": m.block_size, "chat": m.is_chat} for m in rows]
    return JsonResponse({"object": "list", "data": data})


# ----------------------------------------------------------------------------------------------------------------------
# POST /v1/completions and /v1/chat/completions


def _create(request, body: dict, *, chat: bool):
    user = _user(request)
    model = openai.model_from(body)
    openai.unsupported_check(body)
    params, top = openai.params_from(body, chat=chat)
    if chat:
        generation = services.generation_create(user=user, model_ref=model, mode="chat",
                                                messages=openai.messages_from(body), params=params, via="api",
                                                client=client_address(request))
    else:
        generation = services.generation_create(user=user, model_ref=model, mode="completion",
                                                prompt=openai.prompt_from(body), params=params, via="api",
                                                client=client_address(request))
    return generation, top


def _start(generation):
    with transaction.atomic():
        services.generation_start(generation=generation)


def _stop(generation_id: int, reason: str):
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is not None and not generation.finished_state:
        services.generation_stop(generation=generation, reason=reason)


@csrf_exempt
async def completions(request):
    return await _serve(request, chat=False)


@csrf_exempt
async def chat_completions(request):
    return await _serve(request, chat=True)


async def _serve(request, *, chat: bool):
    if request.method != "POST":
        return error_response(f"use POST {request.path}", status=405)
    try:
        body = openai.json_body(request.body)
        stream = openai.stream_from(body)
        include_usage = openai.include_usage_from(body) if stream else False
        generation, top = await sync_to_async(_create)(request, body, chat=chat)
    except InferenceError as e:
        return _error(e)
    listener = Listener(generation.pk)
    await listener.join()
    await sync_to_async(_start)(generation)
    first = await listener.next(settings.INFERENCE_QUEUE_TIMEOUT)
    if first is None:
        await sync_to_async(_stop)(generation.pk, Generation.StopReason.TIMEOUT)
        await listener.leave()
        return error_response(f"No inference worker took the request within {settings.INFERENCE_QUEUE_TIMEOUT:.0f} s:"
                              f" is one running (make worker QUEUE=infer), or are all busy?", status=503,
                              code="no_worker")
    if first["type"] == realtime.STATE and first["status"] == Generation.Status.FAILED:
        await listener.leave()
        return error_response(first.get("error") or "the generation failed", status=400, code="generation_failed")
    meta = {"id": ("chatcmpl-" if chat else "cmpl-") + generation.uid.hex, "created": int(time.time()),
            "model": generation.model.slug}
    result = openai.Result(generation.params.get("stop") or [])
    steps = generation_events(listener, first, result)
    if stream:
        events = _sse(steps, listener, result, meta, chat=chat, top=top, include_usage=include_usage)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    last = None
    try:
        async for step in steps:
            last = step
    except asyncio.CancelledError:  # the client hung up before the answer was ready
        await sync_to_async(_stop)(generation.pk, Generation.StopReason.DISCONNECTED)
        raise
    finally:
        await listener.leave()
    if last.kind == SILENT:
        await sync_to_async(_stop)(generation.pk, Generation.StopReason.TIMEOUT)
        return error_response("the worker went silent: try again", status=503, code="worker_timeout")
    if last.kind == FAILED:
        return error_response(last.final.get("error") or "the generation failed", status=400,
                              code="generation_failed")
    return JsonResponse(openai.response(meta, last.final, result.records, chat=chat, top=top))


async def _sse(steps, listener: Listener, result: openai.Result, meta: dict, *, chat: bool, top: int | None,
               include_usage: bool):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    generation_id = listener.generation_id
    finished = False

    def chunk(text: str, records: list[dict] | None = None, **kw) -> bytes:
        return openai.sse(openai.chunk(meta, text, records, chat=chat, top=top, include_usage=include_usage, **kw))

    try:
        if chat:
            yield chunk("", role=True)
        async for step in steps:
            if step.kind == TOKENS:
                text = result.safe_text()
                if text or (step.records and top is not None):
                    yield chunk(text, [r for r in step.records if not r.get("eos")],
                                start=result.emitted - len(text))
            elif step.kind == SILENT:
                yield openai.sse(openai.error_body("the worker went silent", status=503, code="worker_timeout"))
                await sync_to_async(_stop)(generation_id, Generation.StopReason.TIMEOUT)
            elif step.kind == FAILED:
                finished = True
                yield openai.sse(openai.error_body(step.final.get("error") or "the generation failed", status=500,
                                                   code="generation_failed"))
            elif step.kind == FINAL:
                finished = True
                if rest := result.rest_text(step.final):
                    yield chunk(rest)
                yield chunk("", finish=openai.finish_reason(step.final))
                if include_usage:
                    yield openai.sse(openai.usage_chunk(meta, step.final, result.records, chat=chat))
        yield openai.SSE_DONE
    finally:
        # the client hung up (Django cancels this generator) or the stream ended: either way the worker is freed
        if not finished:
            await sync_to_async(_stop)(generation_id, Generation.StopReason.DISCONNECTED)
        await listener.leave()


@csrf_exempt
def not_found(request, *args, **kwargs):
    return error_response(f"unknown endpoint {request.method} {request.path}: this server offers GET /v1/models, "
                          f"POST /v1/completions and POST /v1/chat/completions", status=404)
