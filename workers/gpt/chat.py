"""
Chat prompts: a conversation rendered into one prompt string by the model's own chat template.

Chat templates are Jinja, shipped inside model files (GGUF metadata `tokenizer.chat_template`, Hugging Face's
tokenizer_config.json). They come from outside, so they run in Jinja's immutable sandbox with the same environment
Hugging Face's apply_chat_template sets up (trim_blocks, lstrip_blocks, loop controls, `raise_exception`,
`strftime_now`), which is what template authors test against. No torch, no Django.

    render_chat(template, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    # '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\\n<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import functools
import json
from datetime import datetime

ROLES = ("system", "user", "assistant")


class ChatTemplateError(ValueError):
    """The template failed to render these messages (the message says why)."""


def _raise_exception(message):
    raise ChatTemplateError(f"the chat template refused the conversation: {message}")


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=32)
def _compile(template: str):
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except TemplateError as e:
        raise ChatTemplateError(f"the model's chat template is not valid Jinja: {e}") from None


def check_messages(messages) -> list[dict]:
    """Messages as the template expects them: a non-empty list of {"role", "content"} with known roles."""
    if not isinstance(messages, list) or not messages:
        raise ChatTemplateError("messages must be a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"message {i} must be {{\"role\": one of {', '.join(ROLES)}, \"content\": text}}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def render_chat(template: str, messages, *, add_generation_prompt: bool = True, bos_token: str = "",
                eos_token: str = "") -> str:
    """The prompt text for `messages` under `template`; add_generation_prompt opens the assistant's turn."""
    from jinja2 import TemplateError

    messages = check_messages(messages)
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=bos_token, eos_token=eos_token)
    except ChatTemplateError:
        raise
    except TemplateError as e:
        raise ChatTemplateError(f"the model's chat template failed on this conversation: {e}") from None
