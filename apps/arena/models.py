"""Battles and votes: the arena's record, from which the leaderboard is computed.

A battle is one prompt answered by two published models of the same kind (chat models chat, base models continue
text), drawn at random and shown as A and B; the answers are ordinary generations (apps/inference), so they stream,
stop and are stored like any other. A vote is the battle's owner's verdict, at most one per battle; the names are
shown only after it.
"""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class Battle(models.Model):
    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False, help_text="its name in URLs and sockets")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="battles")
    prompt = models.TextField()
    mode = models.CharField(max_length=10, help_text="chat or completion, as both generations run")
    model_a = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="+")
    model_b = models.ForeignKey("registry.Model", on_delete=models.CASCADE, related_name="+")
    generation_a = models.OneToOneField("inference.Generation", on_delete=models.CASCADE, related_name="+")
    generation_b = models.OneToOneField("inference.Generation", on_delete=models.CASCADE, related_name="+")
    started = models.DateTimeField(null=True, blank=True, help_text="when its page's socket set both generations off")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.CheckConstraint(condition=~Q(model_a=F("model_b")), name="battle_two_models")]

    def __str__(self) -> str:
        return f"battle {self.uid}"


class Vote(models.Model):
    class Choice(models.TextChoices):
        A = "a", "A is better"
        B = "b", "B is better"
        TIE = "tie", "Tie"
        BOTH_BAD = "both_bad", "Both are bad"

    battle = models.OneToOneField(Battle, on_delete=models.CASCADE, related_name="vote")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="arena_votes")
    choice = models.CharField(max_length=10, choices=Choice.choices)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]
        constraints = [models.CheckConstraint(condition=Q(choice__in=["a", "b", "tie", "both_bad"]),
                                              name="vote_choice_valid")]

    def __str__(self) -> str:
        return f"vote {self.choice} on {self.battle.uid}"
