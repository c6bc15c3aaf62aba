"""Reads for the arena: the models that may battle, a battle as its owner sees it, the leaderboard, the vote log."""

from __future__ import annotations

import uuid

from django.core.cache import cache
from django.db.models import Count, Max, Sum
from django.utils.translation import gettext as _

from apps.arena import rating
from apps.arena.models import Battle, Vote
from apps.registry.models import Model

# a vote's choice as the rating fit reads it: "both bad" is a tie, as in LM Arena's own analysis
OUTCOME = {Vote.Choice.A: rating.A, Vote.Choice.B: rating.B, Vote.Choice.TIE: rating.TIE,
           Vote.Choice.BOTH_BAD: rating.TIE}


def arena_models() -> dict[str, list[Model]]:
    """The published models, by kind: chat models (they have a chat template) battle chat models, base models
    battle base models."""
    kinds: dict[str, list[Model]] = {"chat": [], "completion": []}
    for m in Model.objects.filter(status=Model.Status.PUBLISHED).order_by("name"):
        kinds["chat" if m.is_chat else "completion"].append(m)
    return kinds


def arena_shortage_message() -> str | None:
    """Why no battle can start, or None when one can."""
    kinds = arena_models()
    if any(len(models) >= 2 for models in kinds.values()):
        return None
    return _("A battle needs two published models of the same kind; there are %(chat)s chat and "
             "%(base)s base model(s). Publish another on the Models page (promote a training "
             "run's checkpoint, or import one).") % {"chat": len(kinds["chat"]), "base": len(kinds["completion"])}


def battle_get(*, uid, user) -> Battle | None:
    """The user's own battle by uid; None for an unknown uid or someone else's battle."""
    try:
        value = uuid.UUID(str(uid))
    except (ValueError, TypeError):
        return None
    if user is None or not user.is_authenticated:
        return None
    return (Battle.objects.select_related("model_a", "model_b", "generation_a", "generation_b")
            .filter(uid=value, user=user).first())


def battle_by_uid(uid) -> Battle | None:
    try:
        value = uuid.UUID(str(uid))
    except (ValueError, TypeError):
        return None
    return Battle.objects.select_related("model_a", "model_b", "generation_a", "generation_b").filter(uid=value).first()


def side_view(generation) -> dict:
    """One answer as the page shows it before the vote: its text and state, never its model."""
    return {"status": generation.status, "stop_reason": generation.stop_reason, "text": generation.text,
            "n_tokens": generation.n_tokens, "error": generation.error, "finished": generation.finished_state}


def battle_view(battle: Battle) -> dict:
    """What the battle page shows; the models' names only once the battle has its vote."""
    vote = Vote.objects.filter(battle=battle).first()
    view = {"uid": str(battle.uid), "prompt": battle.prompt, "mode": battle.mode,
            "a": side_view(battle.generation_a), "b": side_view(battle.generation_b),
            "vote": vote.choice if vote else None, "vote_label": vote.get_choice_display() if vote else None}
    view["ready"] = view["a"]["status"] == view["b"]["status"] == "done"  # both complete: the vote may open
    if vote:
        view["a"]["model"] = battle.model_a.name
        view["b"]["model"] = battle.model_b.name
    return view


def _outcomes() -> list[tuple[str, str, str]]:
    rows = Vote.objects.values_list("battle__model_a__name", "battle__model_b__name", "choice").order_by("pk")
    return [(a, b, OUTCOME[c]) for a, b, c in rows]


def leaderboard() -> dict:
    """Ratings with 95 % intervals, battle and vote counts, the win-rate matrix; computed from all votes and
    cached under the vote count, the newest vote and the sum of the vote ids (a new or removed vote changes it)."""
    stamp = Vote.objects.aggregate(n=Count("pk"), newest=Max("pk"), total=Sum("pk"))
    count = stamp["n"]
    key = f"arena:leaderboard:{count}:{stamp['newest'] or 0}:{stamp['total'] or 0}"
    board = cache.get(key)
    if board is None:
        outcomes = _outcomes()
        ratings = rating.ratings(outcomes)
        order = [r.model for r in ratings]
        matrix = rating.win_rates(outcomes, order=order)
        board = {"ratings": [r.to_dict() for r in ratings], "votes": count,
                 "battles": Battle.objects.count(),
                 "matrix": [{"model": m, "cells": [{"rate": rate, "n": n, "opponent": order[j]}
                                                   for j, (rate, n) in enumerate(zip(row, counts))]}
                            for m, row, counts in zip(order, matrix["rows"], matrix["counts"])],
                 "models": order}
        cache.set(key, board, 3600)
    return board


def vote_log():
    """Every vote, oldest first, as JSON-ready dicts (the staff JSONL export)."""
    votes = Vote.objects.select_related("battle__model_a", "battle__model_b", "user").order_by("pk")
    for v in votes.iterator():
        yield {"battle": str(v.battle.uid), "model_a": v.battle.model_a.name, "model_b": v.battle.model_b.name,
               "mode": v.battle.mode, "choice": v.choice, "winner": OUTCOME[v.choice], "user": v.user.username,
               "prompt": v.battle.prompt, "created": v.created.isoformat()}
