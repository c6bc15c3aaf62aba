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
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.http import JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from redis.exceptions import RedisError

from apps.inference import realtime, selectors, services
from apps.inference.models import Generation
from apps.inference.services import InferenceError
from apps.registry.models import Model
from apps.system.limits import client_address
from apps.system.unicode import lone_surrogate

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 512 * 1024
NEVER = -9999.0  # the logprob reported for a probability that underflowed to 0
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "user": "stop", "disconnected": "stop",
                  "timeout": "length", "error": "stop"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def logprob(p: float | None) -> float:
    return math.log(p) if p and p > 0 else NEVER


def error_response(message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JsonResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}
    response = JsonResponse(body, status=status)
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
# request parsing


def _json_body(request) -> dict:
    if len(request.body) > MAX_BODY_BYTES:
        raise InferenceError(f"the request body is over {MAX_BODY_BYTES // 1024} KB", status=413)
    try:
        body = json.loads(request.body or b"")
    except (ValueError, UnicodeDecodeError) as e:
        raise InferenceError(f"the request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:
        raise InferenceError("the request body nests too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InferenceError("the request body must be a JSON object", code="invalid_json")
    text_check(body)
    return body


def text_check(value) -> None:
    """Refuse text that is not Unicode (a lone surrogate: see apps.system.unicode). The socket's messages too."""
    if problem := lone_surrogate(value):
        raise InferenceError(problem, code="invalid_unicode")


def _unsupported(body: dict) -> None:
    if body.get("n", 1) not in (1, None):
        raise InferenceError("n > 1 is not supported: send one request per completion", param="n")
    if body.get("best_of", 1) not in (1, None):
        raise InferenceError("best_of is not supported", param="best_of")
    if body.get("echo"):
        raise InferenceError("echo is not supported", param="echo")
    if body.get("suffix"):
        raise InferenceError("suffix (insertion) is not supported", param="suffix")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise InferenceError(f"{name} is not supported: use repetition_penalty (e.g. 1.1) instead", param=name)
    if body.get("tools") or body.get("functions"):
        raise InferenceError("tools and function calling are not supported", param="tools")


def _params(body: dict, *, chat: bool) -> tuple[dict, int | None]:
    """Our sampling settings from OpenAI's names, and how many top logprobs to return (None: no logprobs)."""
    if chat:
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens is None:
            max_tokens = min(512, settings.INFERENCE_MAX_NEW_TOKENS)
        top = None
        if body.get("logprobs"):
            top = body.get("top_logprobs") or 0
        elif body.get("top_logprobs"):
            raise InferenceError("top_logprobs needs logprobs: true", param="top_logprobs")
    else:
        max_tokens = body.get("max_tokens", 16)  # OpenAI's default for completions
        top = body.get("logprobs")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20):
        raise InferenceError("top_logprobs must be a whole number from 0 to 20" if chat else
                             "logprobs must be a whole number from 0 to 20", param="top_logprobs" if chat else "logprobs")
    raw = {"temperature": body.get("temperature", 1.0), "top_p": body.get("top_p", 1.0),
           "top_k": body.get("top_k", 0), "min_p": body.get("min_p", 0.0),
           "repetition_penalty": body.get("repetition_penalty", 1.0), "max_new_tokens": max_tokens,
           "stop": body.get("stop"), "seed": body.get("seed"), "n_alternatives": max(8, top or 0)}
    try:
        params = services.params_parse(raw)
    except InferenceError as e:
        if e.param == "max_new_tokens":
            e.param = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
            raise InferenceError(str(e).replace("max_new_tokens", e.param), param=e.param, code=e.code) from None
        raise
    return params, top


def _messages(body: dict) -> list[dict]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InferenceError("messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise InferenceError(f"messages[{i}] must be an object", param="messages")
        role, content = m.get("role"), m.get("content")
        if role == "developer":
            role = "system"
        if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise InferenceError(f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if role not in ("system", "user", "assistant") or not isinstance(content, str):
            raise InferenceError(f"messages[{i}] must have role system, user or assistant and text content",
                                 param="messages")
        out.append({"role": role, "content": content})
    return out


def _prompt(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InferenceError("prompt must be a string (or a list of exactly one string)", param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InferenceError("prompt must be a string", param="prompt")
    return prompt


def _create(request, body: dict, *, chat: bool):
    user = _user(request)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InferenceError("model is required: GET /v1/models lists them", param="model")
    _unsupported(body)
    params, top = _params(body, chat=chat)
    if chat:
        generation = services.generation_create(user=user, model_ref=model, mode="chat", messages=_messages(body),
                                                params=params, via="api", client=client_address(request))
    else:
        generation = services.generation_create(user=user, model_ref=model, mode="completion", prompt=_prompt(body),
                                                params=params, via="api", client=client_address(request))
    return generation, top


def _include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InferenceError('stream_options must be an object, e.g. {"include_usage": true}', param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InferenceError("stream_options.include_usage must be true or false", param="stream_options")
    return include


def _start(generation):
    with transaction.atomic():
        services.generation_start(generation=generation)


def _stop(generation_id: int, reason: str):
    generation = Generation.objects.filter(pk=generation_id).first()
    if generation is not None and not generation.finished_state:
        services.generation_stop(generation=generation, reason=reason)


# ----------------------------------------------------------------------------------------------------------------------
# listening to a generation


class Listener:
    """A private channel in the generation's group: the worker's events, in order, with timeouts."""

    def __init__(self, generation: Generation):
        self.generation = generation
        self.group = realtime.completion_group(generation.pk)
        self.layer = get_channel_layer()
        self.channel = None

    async def join(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)

    async def leave(self):
        if self.channel is not None:
            await self.layer.group_discard(self.group, self.channel)

    async def next(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
        except asyncio.TimeoutError:
            return None
        except (OSError, RedisError):  # Redis is away for a moment: wait as if nothing came, then ask again
            log.warning("the channel layer is unreachable while waiting for generation %s", self.generation.pk)
            await asyncio.sleep(timeout)
            return None


async def next_event(listener: Listener, generation_id: int) -> dict | None:
    """The generation's next event; None when its worker went silent: it stopped sending heartbeats (noticed within
    WORKER_GONE_SECONDS, the generation is then marked failed) or sent nothing for INFERENCE_EVENT_TIMEOUT."""
    deadline = time.monotonic() + settings.INFERENCE_EVENT_TIMEOUT
    poll = max(0.5, settings.WORKER_HEARTBEAT_SECONDS)
    while (left := deadline - time.monotonic()) > 0:
        event = await listener.next(min(poll, left))
        if event is not None:
            return event
        try:
            if await sync_to_async(services.generation_worker_lost)(generation_id=generation_id):
                return None
            # finished, but its final event never came (Redis restarted and forgot the group): the row has it
            if (final := await sync_to_async(selectors.generation_final_event)(generation_id=generation_id)):
                return final
        except (OSError, RedisError):
            log.warning("could not check on generation %s: Redis is away", generation_id)
    return None


class Result:
    """The generation as the API reports it, built from events (and from the row if the layer dropped a batch)."""

    def __init__(self, generation: Generation, stops: list[str]):
        self.generation = generation
        self.stops = stops
        self.records: list[dict] = []
        self.gap = False
        self.text = ""  # text of the records received in order
        self.emitted = 0  # characters of text already sent to a streaming client
        self.final: dict | None = None

    def add(self, event: dict) -> list[dict]:
        """Take a tokens event; return its new records (empty once a batch was missed: the rest comes at the end)."""
        offset, tokens = event["offset"], event["tokens"]
        if offset > len(self.records):
            self.gap = True
        if self.gap:
            return []
        new = tokens[len(self.records) - offset:]
        self.records.extend(new)
        self.text += "".join(r["t"] for r in new if not r.get("eos"))
        return new

    def safe_text(self) -> str:
        """New text that can go out now: a tail that may be the start of a stop string waits for the next tokens."""
        held = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    held = max(held, k)
                    break
        end = len(self.text) - held
        if end <= self.emitted:
            return ""
        out = self.text[self.emitted:end]
        self.emitted = end
        return out

    async def complete_from_row(self):
        """After the final event: if a batch was dropped, take the records from the database."""
        if len(self.records) < (self.final or {}).get("n_tokens", 0):
            row = await sync_to_async(Generation.objects.get)(pk=self.generation.pk)
            self.records = row.tokens


def _finish_reason(final: dict) -> str:
    return FINISH_REASONS.get(final.get("stop_reason") or "", "stop")


def _usage(final: dict, records: list) -> dict:
    prompt = final.get("prompt_tokens") or 0
    completion = len(records)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _piece(record: dict) -> str:
    return record["t"] or record.get("b", "")


def _chat_logprobs(records: list[dict], top: int) -> dict:
    content = []
    for r in records:
        if r.get("eos"):
            continue
        piece = _piece(r)
        content.append({"token": piece, "logprob": logprob(r.get("rp")), "bytes": list(piece.encode()),
                        "top_logprobs": [{"token": a[1], "logprob": logprob(a[2]), "bytes": list(a[1].encode())}
                                         for a in r.get("ralt", [])[:top]]})
    return {"content": content}


def _completion_logprobs(records: list[dict], top: int, start: int = 0) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = start
    for r in records:
        if r.get("eos"):
            continue
        piece = _piece(r)
        out["tokens"].append(piece)
        out["token_logprobs"].append(logprob(r.get("rp")))
        out["top_logprobs"].append({a[1]: logprob(a[2]) for a in r.get("ralt", [])[:top]})
        out["text_offset"].append(offset)
        offset += len(r["t"])
    return out


# ----------------------------------------------------------------------------------------------------------------------
# POST /v1/completions and /v1/chat/completions


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
        body = _json_body(request)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InferenceError("stream must be true or false", param="stream")
        include_usage = _include_usage(body) if stream else False
        generation, top = await sync_to_async(_create)(request, body, chat=chat)
    except InferenceError as e:
        return _error(e)
    listener = Listener(generation)
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
    result = Result(generation, generation.params.get("stop") or [])
    if stream:
        events = _sse(listener, first, result, meta, chat=chat, top=top, include_usage=include_usage)
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    try:
        event = first
        while True:
            if event is None:
                raise InferenceError("the worker went silent: try again", status=503, code="worker_timeout")
            if event["type"] == realtime.TOKENS:
                result.add(event)
            elif event["status"] in realtime.FINISHED:
                result.final = event
                break
            event = await next_event(listener, generation.pk)
    except InferenceError as e:
        await sync_to_async(_stop)(generation.pk, Generation.StopReason.TIMEOUT)
        return _error(e)
    except asyncio.CancelledError:  # the client hung up before the answer was ready
        await sync_to_async(_stop)(generation.pk, Generation.StopReason.DISCONNECTED)
        raise
    finally:
        await listener.leave()
    final = result.final
    if final["status"] == Generation.Status.FAILED:
        return error_response(final.get("error") or "the generation failed", status=400, code="generation_failed")
    await result.complete_from_row()
    records = result.records
    text = final.get("text", "")
    choice = {"index": 0, "finish_reason": _finish_reason(final)}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
        choice["logprobs"] = _chat_logprobs(records, top) if top is not None else None
        obj = "chat.completion"
    else:
        choice["text"] = text
        choice["logprobs"] = _completion_logprobs(records, top) if top is not None else None
        obj = "text_completion"
    return JsonResponse({**meta, "object": obj, "choices": [choice], "usage": _usage(final, records),
                         "system_fingerprint": f"seed-{final.get('seed')}"})


async def _sse(listener: Listener, first: dict, result: Result, meta: dict, *, chat: bool, top, include_usage: bool):
    """Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    finished = False

    def chunk(text: str, records: list[dict] | None = None, finish: str | None = None, role: bool = False) -> bytes:
        choice = {"index": 0, "finish_reason": finish}
        if chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice["delta"] = delta
            choice["logprobs"] = _chat_logprobs(records, top) if top is not None and records else None
        else:
            choice["text"] = text
            choice["logprobs"] = (_completion_logprobs(records, top, start=result.emitted - len(text))
                                  if top is not None and records else None)
        body = {**meta, "object": obj, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return b"data: " + json.dumps(body).encode() + b"\n\n"

    try:
        if chat:
            yield chunk("", role=True)
        event = first
        while True:
            if event is None:
                error = {"error": {"message": "the worker went silent", "type": "server_error", "param": None,
                                   "code": "worker_timeout"}}
                yield b"data: " + json.dumps(error).encode() + b"\n\n"
                await sync_to_async(_stop)(result.generation.pk, Generation.StopReason.TIMEOUT)
                break
            if event["type"] == realtime.TOKENS:
                new = result.add(event)
                text = result.safe_text()
                if text or (new and top is not None):
                    yield chunk(text, [r for r in new if not r.get("eos")])
            elif event["status"] in realtime.FINISHED:
                result.final = event
                finished = True
                if event["status"] == Generation.Status.FAILED:
                    error = {"error": {"message": event.get("error") or "the generation failed",
                                       "type": "server_error", "param": None, "code": "generation_failed"}}
                    yield b"data: " + json.dumps(error).encode() + b"\n\n"
                    break
                await result.complete_from_row()
                final_text = event.get("text", "")
                rest = final_text[result.emitted:]
                result.emitted = len(final_text)
                if rest:
                    yield chunk(rest)
                yield chunk("", finish=_finish_reason(event))
                if include_usage:
                    usage = {**meta, "object": obj, "choices": [], "usage": _usage(event, result.records)}
                    yield b"data: " + json.dumps(usage).encode() + b"\n\n"
                break
            event = await next_event(listener, result.generation.pk)
        yield b"data: [DONE]\n\n"
    finally:
        # the client hung up (Django cancels this generator) or the stream ended: either way the worker is freed
        if not finished:
            await sync_to_async(_stop)(result.generation.pk, Generation.StopReason.DISCONNECTED)
        await listener.leave()


@csrf_exempt
def not_found(request, *args, **kwargs):
    return error_response(f"unknown endpoint {request.method} {request.path}: this server offers GET /v1/models, "
                          f"POST /v1/completions and POST /v1/chat/completions", status=404)

