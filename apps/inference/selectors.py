"""Reads for generation: a generation by its uid and as the page or the API shows it; the Generate page's models."""

from __future__ import annotations

import uuid

from django.conf import settings

from apps.inference import realtime
from apps.inference.models import ApiToken, Generation
from apps.registry.models import Model
from apps.registry.selectors import model_summary


def generation_by_uid(uid) -> Generation | None:
    try:
        value = uuid.UUID(str(uid))
    except (ValueError, TypeError):
        return None
    return Generation.objects.select_related("model", "parent").filter(uid=value).first()


def model_view(model: Model) -> dict:
    return {"id": model.pk, "slug": model.slug, "name": model.name, "is_chat": model.is_chat,
            "block_size": model.block_size, "status": model.status, "summary": model_summary(model)}


def generation_created_view(generation: Generation) -> dict:
    return {
        "generation": str(generation.uid),
        "model": model_view(generation.model),
        "mode": generation.mode,
        "params": generation.params,
        "parent": str(generation.parent.uid) if generation.parent_id else None,
        "branch_index": generation.branch_index,
        "offset": len(generation.prefix or []),
    }


def generation_view(generation: Generation) -> dict:
    """Everything a page needs to rebuild a generation from the database (JSON-safe)."""
    return {
        **generation_created_view(generation),
        "status": generation.status,
        "stop_reason": generation.stop_reason,
        "error": generation.error,
        "prompt": generation.prompt,
        "messages": generation.messages,
        "tokens": generation.tokens,
        "n_tokens": generation.n_tokens,
        "text": generation.text,
        "prompt_tokens": generation.prompt_tokens,
        "cropped": generation.cropped,
        "seed": generation.seed,
        "stats": generation.stats,
        "created": generation.created.isoformat(),
    }


def generation_final_event(*, generation_id: int) -> dict | None:
    """The final state event of a finished generation, rebuilt from its row (None while it runs): for a listener whose
    events were lost on the way (Redis restarted and forgot the group), so it still ends with the real result."""
    g = Generation.objects.filter(pk=generation_id).first()
    if g is None or not g.finished_state:
        return None
    return realtime.state_event(str(g.uid), status=g.status, stop_reason=g.stop_reason, n_tokens=g.n_tokens,
                                text=g.text, prompt_tokens=g.prompt_tokens or 0, cropped=g.cropped, notes=[],
                                stats=g.stats, error=g.error, seed=g.seed)


def generate_models(*, user) -> list[Model]:
    """The Generate page's picker: the models the user may use, published first, SmolLM2 (seeded) among them."""
    models = list(Model.objects.usable_by(user).select_related("owner"))
    models.sort(key=lambda m: (m.status != Model.Status.PUBLISHED, m.name.lower()))
    return models


def api_tokens(*, user) -> list[ApiToken]:
    if user is None or not user.is_authenticated:
        return []
    return list(user.api_tokens.all())


def limits() -> dict:
    return {"max_new_tokens": settings.INFERENCE_MAX_NEW_TOKENS, "max_prompt_chars": settings.INFERENCE_MAX_PROMPT_CHARS,
            "anon_per_minute": settings.INFERENCE_ANON_PER_MINUTE}
