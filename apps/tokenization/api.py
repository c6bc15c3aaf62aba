"""The JSON API (documented in README.md, "## API"): tokenize, detokenize, list tokenizers.

Same limits and errors as the playground: text over TOKENIZE_MAX_BYTES is 413, an unknown tokenizer or a bad id is
400 with a message saying what to send instead, anonymous callers are rate-limited (429 with Retry-After). Errors
are {"error": "..."}. No cookies are needed, so there is no CSRF token to send."""

from __future__ import annotations

import json

from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from apps.system.limits import RateLimited, client_address
from apps.system.unicode import lone_surrogate
from apps.tokenization import playground, selectors, services
from apps.tokenization.selectors import TokenizationError
from workers.gpt import tokenizers as toklib

MAX_IDS = 500_000


def _error(message: str, status: int, **headers) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def _body(request) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise TokenizationError("the request body is over the size limit; send less text per request",
                                status=413) from None
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # a 5000-digit number is a ValueError too
        raise TokenizationError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise TokenizationError('the body must be a JSON object, e.g. {"text": "hello", "tokenizer": "gpt2"}')
    if problem := lone_surrogate(body):
        raise TokenizationError(problem)
    return body


def _tokenizer_name(body: dict) -> str:
    name = body.get("tokenizer")
    if not isinstance(name, str) or not name:
        raise TokenizationError('"tokenizer" is required: a name such as "gpt2" or "o200k_base" '
                                '(GET /api/tokenizers lists them)')
    return name


def _guarded(view, method: str = "POST"):
    """Rate limit, then turn every refusal into a JSON error with its status."""

    def wrapper(request):
        if request.method != method:
            response = _error(f"use {method}" + (" with a JSON body" if method == "POST" else ""), 405)
            response["Allow"] = method
            return response
        try:
            services.tokenize_rate_limit(user=request.user, client=client_address(request), scope="api")
        except RateLimited as exc:
            return _error(str(exc), exc.status, Retry_After=str(exc.retry_after))
        try:
            return view(request)
        except TokenizationError as exc:
            return _error(str(exc), exc.status)
        except toklib.TokenizerError as exc:
            return _error(str(exc), 400)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return csrf_exempt(wrapper)


@_guarded
def tokenize(request):
    """POST {"text": str, "tokenizer": str, "allow_special": bool = false}
    -> {"tokenizer", "count", "tokens": [{"id", "text", "bytes"}, ...]}"""
    body = _body(request)
    text = body.get("text")
    if not isinstance(text, str):
        raise TokenizationError('"text" is required and must be a string')
    allow_special = body.get("allow_special", False)
    if not isinstance(allow_special, bool):
        raise TokenizationError('"allow_special" must be true or false')
    selectors.text_check(text=text)
    row, tok = selectors.tokenizer_usable(name=_tokenizer_name(body), user=request.user)
    ids = playground.encode_fast(tok, text, allow_special)
    head = '{"tokenizer":%s,"count":%d,"tokens":[' % (json.dumps(row.name), len(ids))
    return HttpResponse(b"".join((head.encode(), playground.tokens_json(tok, ids), b"]}")),
                        content_type="application/json")


@_guarded
def detokenize(request):
    """POST {"ids": [int, ...], "tokenizer": str} -> {"tokenizer", "count", "text", "valid_utf8", "tokens"}"""
    body = _body(request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise TokenizationError('"ids" is required: a list of integer token ids, e.g. [15496, 995]')
    if len(ids) > MAX_IDS:
        raise TokenizationError(f"{len(ids):,} ids is over the limit of {MAX_IDS:,} per request", status=413)
    row, tok = selectors.tokenizer_usable(name=_tokenizer_name(body), user=request.user)
    result = playground.decode(tok, ids)
    head = '{"tokenizer":%s,"count":%d,"text":%s,"valid_utf8":%s,"tokens":[' % (
        json.dumps(row.name), len(ids), json.dumps(result["text"], ensure_ascii=False),
        "true" if result["valid_utf8"] else "false")
    return HttpResponse(b"".join((head.encode("utf-8"), playground.tokens_json(tok, ids), b"]}")),
                        content_type="application/json")


def tokenizers(request):
    """GET -> {"tokenizers": [{"name", "kind", "n_vocab", "n_merges", "special_tokens", "description"}, ...]}"""
    rows = selectors.tokenizer_list(user=request.user, ready_only=True)
    return JsonResponse({"tokenizers": [
        {"name": t.name, "kind": t.kind, "n_vocab": t.n_vocab, "n_merges": t.n_merges,
         "special_tokens": t.special_tokens, "description": t.description} for t in rows]})


tokenizers = _guarded(tokenizers, method="GET")
