"""OpenAI's wire format, both ways, with no I/O: a request body becomes our generation settings (or an InferenceError
naming the field), and a generation's records and final event become OpenAI's responses and stream chunks.

listen.py does the waiting and api.py the HTTP; everything here is a plain function of its arguments, so the tests
call it directly (tests/apps/inference/test_openai.py).
"""

from __future__ import annotations

import json
import math

from django.conf import settings

from apps.inference.services import InferenceError, params_parse
from apps.system.unicode import lone_surrogate

MAX_BODY_BYTES = 512 * 1024
NEVER = -9999.0  # the logprob reported for a probability that underflowed to 0
FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length", "user": "stop", "disconnected": "stop",
                  "timeout": "length", "error": "stop"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}


def logprob(p: float | None) -> float:
    return math.log(p) if p and p > 0 else NEVER


def error_body(message: str, *, status: int = 400, param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                      "code": code}}


# ----------------------------------------------------------------------------------------------------------------------
# requests


def json_body(raw: bytes) -> dict:
    if len(raw) > MAX_BODY_BYTES:
        raise InferenceError(f"the request body is over {MAX_BODY_BYTES // 1024} KB", status=413)
    try:
        body = json.loads(raw or b"")
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


def unsupported_check(body: dict) -> None:
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


def params_from(body: dict, *, chat: bool) -> tuple[dict, int | None]:
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
        params = params_parse(raw)
    except InferenceError as e:
        if e.param == "max_new_tokens":
            e.param = "max_completion_tokens" if chat and "max_completion_tokens" in body else "max_tokens"
            raise InferenceError(str(e).replace("max_new_tokens", e.param), param=e.param, code=e.code) from None
        raise
    return params, top


def messages_from(body: dict) -> list[dict]:
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


def prompt_from(body: dict) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InferenceError("prompt must be a string (or a list of exactly one string)", param="prompt")
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise InferenceError("prompt must be a string", param="prompt")
    return prompt


def model_from(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InferenceError("model is required: GET /v1/models lists them", param="model")
    return model


def stream_from(body: dict) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InferenceError("stream must be true or false", param="stream")
    return stream


def include_usage_from(body: dict) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise InferenceError('stream_options must be an object, e.g. {"include_usage": true}', param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InferenceError("stream_options.include_usage must be true or false", param="stream_options")
    return include


# ----------------------------------------------------------------------------------------------------------------------
# the generation as the API reports it


class Result:
    """Records and text built from a generation's tokens events, in order. A missed batch (the channel layer drops
    messages to slow readers) sets `gap`: nothing more is taken and the records come from the row at the end."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.records: list[dict] = []
        self.gap = False
        self.text = ""  # text of the records received in order
        self.emitted = 0  # characters of text already sent to a streaming client

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

    def rest_text(self, final: dict) -> str:
        """The final text not yet sent (the worker's final text is the truth: stop strings already cut off)."""
        final_text = final.get("text", "")
        rest = final_text[self.emitted:]
        self.emitted = len(final_text)
        return rest


# ----------------------------------------------------------------------------------------------------------------------
# responses


def finish_reason(final: dict) -> str:
    return FINISH_REASONS.get(final.get("stop_reason") or "", "stop")


def usage(final: dict, records: list) -> dict:
    prompt = final.get("prompt_tokens") or 0
    completion = len(records)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _piece(record: dict) -> str:
    return record["t"] or record.get("b", "")


def chat_logprobs(records: list[dict], top: int) -> dict:
    content = []
    for r in records:
        if r.get("eos"):
            continue
        piece = _piece(r)
        content.append({"token": piece, "logprob": logprob(r.get("rp")), "bytes": list(piece.encode()),
                        "top_logprobs": [{"token": a[1], "logprob": logprob(a[2]), "bytes": list(a[1].encode())}
                                         for a in r.get("ralt", [])[:top]]})
    return {"content": content}


def completion_logprobs(records: list[dict], top: int, start: int = 0) -> dict:
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


def response(meta: dict, final: dict, records: list[dict], *, chat: bool, top: int | None) -> dict:
    """The whole answer, for a request without `stream`."""
    text = final.get("text", "")
    choice = {"index": 0, "finish_reason": finish_reason(final)}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
        choice["logprobs"] = chat_logprobs(records, top) if top is not None else None
        obj = "chat.completion"
    else:
        choice["text"] = text
        choice["logprobs"] = completion_logprobs(records, top) if top is not None else None
        obj = "text_completion"
    return {**meta, "object": obj, "choices": [choice], "usage": usage(final, records),
            "system_fingerprint": f"seed-{final.get('seed')}"}


def chunk_object(*, chat: bool) -> str:
    return "chat.completion.chunk" if chat else "text_completion"


def chunk(meta: dict, text: str, records: list[dict] | None = None, *, chat: bool, top: int | None,
          include_usage: bool, finish: str | None = None, role: bool = False, start: int = 0) -> dict:
    """One streamed chunk: new text (and its tokens' logprobs), the assistant's role first in a chat, or the finish
    reason last. `start` is the text offset of `text` in the whole completion (for completions' logprobs)."""
    choice = {"index": 0, "finish_reason": finish}
    if chat:
        choice["delta"] = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        choice["logprobs"] = chat_logprobs(records, top) if top is not None and records else None
    else:
        choice["text"] = text
        choice["logprobs"] = completion_logprobs(records, top, start=start) if top is not None and records else None
    body = {**meta, "object": chunk_object(chat=chat), "choices": [choice]}
    if include_usage:
        body["usage"] = None
    return body


def usage_chunk(meta: dict, final: dict, records: list[dict], *, chat: bool) -> dict:
    """The last chunk when stream_options.include_usage is set: no choices, the usage."""
    return {**meta, "object": chunk_object(chat=chat), "choices": [], "usage": usage(final, records)}


def sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"
