"""Writes for generation: validate a request, create it, start it on an infer worker, stop it, record how it ended;
and API tokens. The Generate page's socket, the OpenAI-compatible API and the worker glue all come through here.

    generation = generation_create(user=..., model_ref="smollm2-135m-instruct", mode="chat", messages=[...], params={...})
    ... join realtime.completion_group(generation.pk) ...
    generation_start(generation=generation)        # on commit: tasks.completion_stream.delay(generation.pk)
    generation_stop(generation=generation, reason="user")

Joining the group happens between create and start, so not even the first event can be missed.
"""

from __future__ import annotations

import hashlib
import math
import secrets

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from apps.inference import realtime
from apps.inference.models import ApiToken, Generation
from apps.registry.selectors import model_usable
from apps.registry.services import RegistryError
from apps.system.realtime import publish
from apps.system import limits
from apps.system.redisconn import redis_client
from apps.system.selectors import worker_statuses, worker_view

MAX_STOP_STRINGS = 4
MAX_STOP_CHARS = 100
MAX_ALTERNATIVES = 20
# The Generate page starts from these (LM Studio's defaults); a socket request that leaves a setting out gets it too.
DEFAULTS = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repetition_penalty": 1.1,
            "max_new_tokens": 200, "stop": [], "seed": None, "n_alternatives": 8}


class InferenceError(ValueError):
    """A request that cannot be served; the message says why and what to do. `param` names the offending field (the
    API reports it), `status` the HTTP status, `code` an OpenAI-style error code."""
    def __init__(self, message: str, *, param: str | None = None, status: int = 400, code: str | None = None,
                 retry_after: int | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds, for a Retry-After header


# ----------------------------------------------------------------------------------------------------------------------
# sampling settings


def _number(raw: dict, name: str, *, kind=float, low=None, high=None, low_open=False, default=None):
    value = raw.get(name)
    if value is None or value == "":
        value = default  # left out, null, or an empty form field
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)
                                                                           and not value.is_integer()):
        if isinstance(value, str):
            try:
                value = kind(value.strip())
            except ValueError:
                raise InferenceError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}",
                                     param=name) from None
        else:
            raise InferenceError(f"{name} must be a {'whole ' if kind is int else ''}number, got {value!r}", param=name)
    if isinstance(value, float) and not math.isfinite(value):
        raise InferenceError(f"{name} must be a finite number", param=name)
    try:
        value = kind(value)
    except OverflowError:  # an integer too large for a float
        raise InferenceError(f"{name} is far out of range", param=name) from None
    if low is not None and (value <= low if low_open else value < low):
        raise InferenceError(f"{name} ({value}) must be {'>' if low_open else '>='} {low}", param=name)
    if high is not None and value > high:
        raise InferenceError(f"{name} ({value}) must be <= {high}", param=name)
    return value


def params_parse(raw: dict, *, max_new_tokens_limit: int | None = None) -> dict:
    """Validated sampling settings from a request (the page's form or the API's JSON), defaults filled in.

    temperature 0..2 (0 = greedy), top_k >= 0 (0 = off), top_p in (0, 1], min_p in [0, 1), repetition_penalty in
    (0, 10], max_new_tokens 1..INFERENCE_MAX_NEW_TOKENS, up to 4 stop strings, seed >= 0 or none."""
    if not isinstance(raw, dict):
        raise InferenceError("sampling settings must be a JSON object")
    limit = max_new_tokens_limit or settings.INFERENCE_MAX_NEW_TOKENS
    p = {
        "temperature": _number(raw, "temperature", low=0, high=2, default=DEFAULTS["temperature"]),
        "top_k": _number(raw, "top_k", kind=int, low=0, default=DEFAULTS["top_k"]) or 0,
        "top_p": _number(raw, "top_p", low=0, low_open=True, high=1, default=DEFAULTS["top_p"]),
        "min_p": _number(raw, "min_p", low=0, high=0.999, default=DEFAULTS["min_p"]) or 0.0,
        "repetition_penalty": _number(raw, "repetition_penalty", low=0, low_open=True, high=10,
                                      default=DEFAULTS["repetition_penalty"]),
        "max_new_tokens": _number(raw, "max_new_tokens", kind=int, low=1, default=DEFAULTS["max_new_tokens"]),
        "seed": _number(raw, "seed", kind=int, low=0, high=2**63 - 1),
        "n_alternatives": _number(raw, "n_alternatives", kind=int, low=1, high=MAX_ALTERNATIVES,
                                  default=DEFAULTS["n_alternatives"]),
    }
    if p["temperature"] is None:
        p["temperature"] = DEFAULTS["temperature"]
    if p["max_new_tokens"] > limit:
        raise InferenceError(f"max_new_tokens ({p['max_new_tokens']}) is above the limit of {limit} tokens per "
                             f"request: ask for fewer", param="max_new_tokens", code="max_tokens_exceeded")
    stop = raw.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]  # OpenAI's API takes one string or a list (the page splits its textarea into lines itself)
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise InferenceError("stop must be a string or a list of strings", param="stop")
    stop = [s for s in stop if s]
    if len(stop) > MAX_STOP_STRINGS:
        raise InferenceError(f"at most {MAX_STOP_STRINGS} stop strings, got {len(stop)}", param="stop")
    if any(len(s) > MAX_STOP_CHARS for s in stop):
        raise InferenceError(f"a stop string has at most {MAX_STOP_CHARS} characters", param="stop")
    p["stop"] = stop
    return p


# ----------------------------------------------------------------------------------------------------------------------
# generations


def _check_prompt(mode: str, prompt, messages, model) -> tuple[str, list | None]:
    limit = settings.INFERENCE_MAX_PROMPT_CHARS
    if mode == Generation.Mode.CHAT:
        if not model.is_chat:
            raise InferenceError(f"{model.name} has no chat template: use a completion (a plain prompt) instead",
                                 param="messages")
        from workers.gpt.chat import ChatTemplateError, check_messages

        try:
            messages = check_messages(messages)
        except ChatTemplateError as e:
            raise InferenceError(str(e), param="messages") from None
        size = sum(len(m["content"]) for m in messages)
        if size > limit:
            raise InferenceError(f"the conversation is {size:,} characters; the limit is {limit:,}",
                                 param="messages", code="context_length_exceeded")
        return "", messages
    if mode != Generation.Mode.COMPLETION:
        raise InferenceError("mode must be 'completion' or 'chat'", param="mode")
    if not isinstance(prompt, str):
        raise InferenceError("prompt must be text", param="prompt")
    if len(prompt) > limit:
        raise InferenceError(f"the prompt is {len(prompt):,} characters; the limit is {limit:,}: shorten it",
                             param="prompt", code="context_length_exceeded")
    if not prompt:
        raise InferenceError("the prompt is empty: type something for the model to continue", param="prompt")
    return prompt, None


def generation_create(*, user, model_ref, mode: str = "completion", prompt: str = "", messages=None,
                      params: dict | None = None, via: str = "web", client: str = "") -> Generation:
    """Validate and record a generation request (not started yet: see generation_start)."""
    try:
        model = model_usable(ref=model_ref, user=user)
    except RegistryError as e:
        raise InferenceError(str(e), param="model", status=404, code="model_not_found") from None
    params = params_parse(params or {})
    prompt, messages = _check_prompt(mode, prompt, messages, model)
    rate_limit(user=user, client=client)
    return Generation.objects.create(model=model, user=user if user and user.is_authenticated else None, via=via,
                                     mode=mode, prompt=prompt, messages=messages, params=params)


def generation_branch(*, parent: Generation, index: int, token_id: int, user, client: str = "") -> Generation:
    """A new generation that keeps the parent's tokens before `index`, puts token_id there instead (an alternative
    shown for that position), and continues from it under the parent's settings (with a fresh seed)."""
    if not parent.finished_state:
        raise InferenceError("wait for the generation to finish (or stop it) before branching from it")
    tokens = parent.tokens or []
    if not isinstance(index, int) or not 0 <= index < len(tokens):
        raise InferenceError(f"index must be a token position 0..{len(tokens) - 1}", param="index")
    if not isinstance(token_id, int) or not 0 <= token_id < parent.model.config["vocab_size"]:
        raise InferenceError("token must be a token id of this model", param="token")
    record = tokens[index]
    choices = {a[0]: a for a in record.get("alt", [])} | {a[0]: a for a in record.get("ralt", [])}
    if token_id not in choices and token_id != record["id"]:
        raise InferenceError("branch from one of the alternatives shown for that token", param="token")
    rate_limit(user=user, client=client)
    alt = choices.get(token_id)
    forced = {"i": index, "id": token_id, "t": alt[1] if alt else record["t"], "forced": True,
              "p": _prob_of(record.get("alt", []), token_id), "rp": _prob_of(record.get("ralt", []), token_id),
              "alt": record.get("alt", []), "ralt": record.get("ralt", [])}
    prefix = [dict(t) for t in tokens[:index]] + [forced]
    params = {**parent.params, "seed": None}
    return Generation.objects.create(
        model=parent.model, user=user if user and user.is_authenticated else None, via=parent.via, mode=parent.mode,
        prompt=parent.prompt, messages=parent.messages, params=params, parent=parent, branch_index=index,
        prefix=prefix)


def _prob_of(alternatives: list, token_id: int) -> float | None:
    return next((a[2] for a in alternatives if a[0] == token_id), None)


def generation_start(*, generation: Generation) -> None:
    """Hand the generation to an infer worker (after the transaction commits)."""
    from workers.tasks import completion_stream as completion_stream_task

    gid = generation.pk
    transaction.on_commit(lambda: completion_stream_task.delay(gid))


def generation_stop(*, generation: Generation, reason: str = Generation.StopReason.USER) -> None:
    """Ask the worker to stop (it checks between batches). A generation still queued is marked stopped at once."""
    redis_client().set(realtime.stop_key(generation.pk), reason, ex=3600)
    stopped = Generation.objects.filter(pk=generation.pk, status=Generation.Status.QUEUED).update(
        status=Generation.Status.STOPPED, stop_reason=reason, finished=timezone.now())
    if stopped:  # no worker has it, so no worker will send the final event: send it here
        event = realtime.state_event(str(generation.uid), status=Generation.Status.STOPPED, stop_reason=reason,
                                     n_tokens=len(generation.prefix or []), text="", stats={}, notes=[], error="")
        transaction.on_commit(lambda: publish(realtime.completion_group(generation.pk), event))


def generation_worker_lost(*, generation_id: int) -> bool:
    """If the worker running this generation stopped beating its heart (killed, its machine gone), mark the generation
    failed and send its final event, so whoever waits on it (the page, the API) hears within WORKER_GONE_SECONDS
    instead of after INFERENCE_EVENT_TIMEOUT. True when it was lost."""
    generation = Generation.objects.filter(pk=generation_id, status=Generation.Status.RUNNING).exclude(worker="").first()
    if generation is None:
        return False
    status = worker_statuses().get(generation.worker)
    if status is not None and worker_view(status)["state"] == "live":
        return False
    started = generation.started or generation.created
    if status is None and (timezone.now() - started).total_seconds() < settings.WORKER_GONE_SECONDS:
        return False  # not heard from yet (a worker just started): give it the same grace as a silent one
    error = (f"the worker went silent: {generation.worker} stopped sending heartbeats (it was killed or its machine "
             f"went away). Try again: another worker will take it.")
    lost = Generation.objects.filter(pk=generation_id, status=Generation.Status.RUNNING).update(
        status=Generation.Status.FAILED, stop_reason=Generation.StopReason.ERROR, error=error, finished=timezone.now())
    if lost:
        event = realtime.state_event(str(generation.uid), status=Generation.Status.FAILED,
                                     stop_reason=Generation.StopReason.ERROR, n_tokens=len(generation.tokens or []),
                                     text=generation.text, stats={}, notes=[], error=error)
        publish(realtime.completion_group(generation_id), event)
    return bool(lost)


def generation_may_control(*, generation: Generation, user) -> bool:
    """Stop or branch: the user who started it (or staff). Anonymous generations are controlled through the socket
    that started them, which the consumer tracks itself."""
    if user is None or not user.is_authenticated:
        return False
    return user.is_staff or generation.user_id == user.id


# -- the worker's side ------------------------------------------------------------------------------------------------


def generation_mark_running(*, generation_id: int, worker: str) -> Generation | None:
    """Claim a queued generation for a worker; None if it is no longer queued (stopped, or delivered twice)."""
    updated = Generation.objects.filter(pk=generation_id, status=Generation.Status.QUEUED).update(
        status=Generation.Status.RUNNING, started=timezone.now(), worker=worker)
    if not updated:
        return None
    return Generation.objects.select_related("model").get(pk=generation_id)


def generation_stop_requested(*, generation_id: int) -> str | None:
    try:
        raw = redis_client().get(realtime.stop_key(generation_id))
    except RedisError:  # Redis is away for a moment: keep generating, the next check asks again
        return None
    return raw.decode() if raw else None


def generation_finish(*, generation_id: int, status: str, stop_reason: str, tokens: list[dict], text: str,
                      prompt_tokens: int | None, cropped: bool, seed: int | None, stats: dict, error: str = "") -> None:
    Generation.objects.filter(pk=generation_id).update(
        status=status, stop_reason=stop_reason, tokens=tokens, text=text, n_tokens=len(tokens),
        prompt_tokens=prompt_tokens, cropped=cropped, seed=seed, stats=stats, error=error, finished=timezone.now())
    try:
        redis_client().delete(realtime.stop_key(generation_id))
    except RedisError:  # it expires by itself within the hour
        pass


# ----------------------------------------------------------------------------------------------------------------------
# rate limits: anonymous clients only


def rate_limit(*, user, client: str) -> None:
    """Count a generation against an anonymous client's per-minute budget; InferenceError 429 when it is spent (503
    when the limiter cannot reach Redis: see apps.system.limits)."""
    if user is not None and user.is_authenticated:
        return
    limit = settings.INFERENCE_ANON_PER_MINUTE
    try:
        limits.rate_limit(scope="inference.generate", who=client, limit=limit,
                          message=f"Anonymous use is limited to {limit} generations a minute: try again in "
                                  "{retry_after} s, or sign in (or use an API token) for more.")
    except limits.RateLimited as e:
        code = "rate_limit_exceeded" if e.status == 429 else "rate_limiter_unavailable"
        raise InferenceError(str(e), status=e.status, code=code, retry_after=e.retry_after) from None


# ----------------------------------------------------------------------------------------------------------------------
# API tokens

TOKEN_PREFIX = "lab-"


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Make a token; returns the row and the key, which is shown this once (only its hash is kept)."""
    if user is None or not user.is_authenticated:
        raise InferenceError("Sign in to make API tokens.", status=401)
    name = (name or "").strip()[:60] or "token"
    if user.api_tokens.count() >= 20:
        raise InferenceError("You have 20 tokens already: revoke one first.")
    key = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(user=user, name=name, prefix=key[:10], key_hash=_hash(key))
    return token, key


def api_token_revoke(*, token_id: int, user) -> None:
    deleted, _ = ApiToken.objects.filter(pk=token_id, user=user).delete()
    if not deleted:
        raise InferenceError("No such token.", status=404)


def api_token_user(*, key: str):
    """The user an API key belongs to (and mark it used), or None for a key that is not ours. A key with our
    prefix that matches nothing raises InferenceError 401: a typo should not silently fall back to anonymous."""
    if not key or not key.startswith(TOKEN_PREFIX):
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=_hash(key)).first()
    if token is None or not token.user.is_active:
        raise InferenceError("Invalid API token: make one on the API page (Generate → API) and send it as "
                             "'Authorization: Bearer lab-…'.", status=401, code="invalid_api_key")
    ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    return token.user
