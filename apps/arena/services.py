"""Writes for the arena: start a battle, set its two generations off, record a vote, remove a user's votes.

    battle = battle_create(user=user, prompt="Write a haiku about rain")   # two models drawn, two generations queued
    ... the battle page's socket joins both generations' groups ...
    battle_start(battle=battle)                                           # on commit: both handed to infer workers
    vote_create(battle=battle, user=user, choice="a")                     # once both answers are done

The answers are ordinary generations made through apps.inference.services, so they are validated, rate-limited,
streamed and stored exactly as on the Generate page. The rules of a fair vote live here: signed-in users only, one
vote per battle, only on your own battle, only once both answers are complete.
"""

from __future__ import annotations

import random
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.arena import selectors
from apps.arena.models import Battle, Vote
from apps.inference import services as inference
from apps.inference.models import Generation

MAX_PROMPT_CHARS = 4000
MAX_OPEN_BATTLES = 2  # battles of one user whose answers are still coming; each holds two infer slots
OPEN_WINDOW = timedelta(minutes=10)  # a battle older than this no longer counts as open (its page was left)
# Both sides sample alike, so the vote compares models, not settings: the Generate page's defaults, shorter.
PARAMS = {**inference.DEFAULTS, "max_new_tokens": 200, "n_alternatives": 1}


class ArenaError(ValueError):
    """A request the arena refuses; the message says why and what to do, `status` is the HTTP status."""

    def __init__(self, message: str, *, status: int = 400):
        super().__init__(message)
        self.status = status


def _signed_in(user, what: str) -> None:
    """`what`: a translated phrase, "start a battle" or "vote"."""
    if user is None or not user.is_authenticated:
        raise ArenaError(_("Sign in to %(what)s: the arena counts votes from signed-in users only.") % {"what": what},
                         status=403)


def battle_pair(*, rng: random.Random | None = None):
    """Two different published models of the same kind, in random order. Every eligible pair is equally likely."""
    rng = rng or random.SystemRandom()
    pairs = [(a, b) for models in selectors.arena_models().values()
             for i, a in enumerate(models) for b in models[i + 1:]]
    if not pairs:
        raise ArenaError(selectors.arena_shortage_message(), status=409)
    pair = list(rng.choice(pairs))
    rng.shuffle(pair)
    return pair[0], pair[1]


def battle_create(*, user, prompt, client: str = "", rng: random.Random | None = None) -> Battle:
    """Validate the prompt, draw two models and record their two (not yet started) generations."""
    _signed_in(user, _("start a battle"))
    if not isinstance(prompt, str) or not prompt.strip():
        raise ArenaError(_("The prompt is empty: write something for both models to answer."))
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ArenaError(_("The prompt is %(n)s characters; the arena takes at most %(max)s: shorten it.")
                         % {"n": f"{len(prompt):,}", "max": f"{MAX_PROMPT_CHARS:,}"})
    open_battles = (Battle.objects.filter(user=user, created__gte=timezone.now() - OPEN_WINDOW)
                    .exclude(generation_a__status__in=Generation.FINISHED, generation_b__status__in=Generation.FINISHED)
                    .count())
    if open_battles >= MAX_OPEN_BATTLES:
        raise ArenaError(_("You have %(n)s battles still answering: wait for them to finish, then start another.")
                         % {"n": open_battles}, status=429)
    model_a, model_b = battle_pair(rng=rng)
    mode = Generation.Mode.CHAT if model_a.is_chat else Generation.Mode.COMPLETION
    request = {"mode": mode, "params": PARAMS, "via": "arena", "client": client,
               **({"messages": [{"role": "user", "content": prompt}]} if mode == Generation.Mode.CHAT
                  else {"prompt": prompt})}
    try:
        with transaction.atomic():
            generation_a = inference.generation_create(user=user, model_ref=model_a.slug, **request)
            generation_b = inference.generation_create(user=user, model_ref=model_b.slug, **request)
            return Battle.objects.create(user=user, prompt=prompt, mode=mode, model_a=model_a, model_b=model_b,
                                         generation_a=generation_a, generation_b=generation_b)
    except inference.InferenceError as e:
        raise ArenaError(str(e), status=e.status) from None


def battle_start(*, battle: Battle) -> bool:
    """Hand both generations to infer workers, once: the first socket to open the battle does it (after joining
    the generations' groups, so no event is missed). False when the battle was started already."""
    with transaction.atomic():
        claimed = Battle.objects.filter(pk=battle.pk, started__isnull=True).update(started=timezone.now())
        if claimed:
            inference.generation_start(generation=battle.generation_a)
            inference.generation_start(generation=battle.generation_b)
    return bool(claimed)


def battle_abandon(*, battle_id: int) -> None:
    """The battle's page went away mid-answer: stop what is still running, to free the workers."""
    battle = Battle.objects.select_related("generation_a", "generation_b").filter(pk=battle_id).first()
    if battle is None:
        return
    for generation in (battle.generation_a, battle.generation_b):
        generation.refresh_from_db(fields=["status"])
        if not generation.finished_state:
            inference.generation_stop(generation=generation, reason=Generation.StopReason.DISCONNECTED)


def vote_create(*, battle: Battle, user, choice) -> Vote:
    """The battle owner's one verdict, once both answers are complete."""
    _signed_in(user, _("vote"))
    if choice not in Vote.Choice.values:
        raise ArenaError(_("choice must be one of %(choices)s, got %(choice)r")
                         % {"choices": ", ".join(Vote.Choice.values), "choice": choice})
    if battle.user_id != user.id:
        raise ArenaError(_("This battle is someone else's: start your own to vote."), status=403)
    if Vote.objects.filter(battle=battle).exists():
        raise ArenaError(_("You have voted on this battle already: start a new battle to vote again."), status=409)
    a, b = (Generation.objects.get(pk=pk) for pk in (battle.generation_a_id, battle.generation_b_id))
    if not (a.finished_state and b.finished_state):
        raise ArenaError(_("Wait until both answers have finished before voting."), status=409)
    for side, g in (("A", a), ("B", b)):
        if g.status != Generation.Status.DONE:
            raise ArenaError(_("Answer %(side)s did not complete (%(status)s): this battle cannot be judged fairly; "
                               "start a new one.") % {"side": side, "status": g.status + (": " + g.error if g.error else "")},
                             status=409)
    try:
        with transaction.atomic():
            return Vote.objects.create(battle=battle, user=user, choice=choice)
    except IntegrityError:  # a second vote racing the first
        raise ArenaError(_("You have voted on this battle already: start a new battle to vote again."),
                         status=409) from None


def votes_remove(*, users) -> int:
    """Delete every vote of these users (staff, from the admin); the leaderboard recomputes without them."""
    deleted, _ = Vote.objects.filter(user__in=users).delete()
    return deleted
