import pytest
from django.contrib.auth.models import User

from apps.inference import services as inference
from apps.inference.models import Generation
from apps.registry.models import Model
from tests.apps.registry.factories import make_model


@pytest.fixture
def queued(monkeypatch):
    """The ids of generations handed to the infer queue (instead of a worker taking them)."""
    from workers import tasks

    ids = []
    monkeypatch.setattr(tasks.completion_stream, "delay", lambda gid: ids.append(gid))
    return ids


@pytest.fixture
def chat_models(tmp_path):
    """Two published chat models (the tiny GGUF carries ChatML)."""
    return [make_chat(tmp_path, "Alpha"), make_chat(tmp_path, "Beta")]


def make_chat(tmp_path, name, status=Model.Status.PUBLISHED):
    (tmp_path / name).mkdir()
    return make_model(tmp_path / name, name=name, status=status)


def make_base(tmp_path, name, status=Model.Status.PUBLISHED):
    model = make_chat(tmp_path, name, status=status)
    Model.objects.filter(pk=model.pk).update(chat_template="")
    return Model.objects.get(pk=model.pk)


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob(db):
    return User.objects.create_user("bob", password="pw-bob-123")


def finish(battle, *, a="done", b="done"):
    """What the infer worker records when each answer ends."""
    for generation, status, text in ((battle.generation_a, a, "answer A"), (battle.generation_b, b, "answer B")):
        inference.generation_finish(generation_id=generation.pk, status=status,
                                    stop_reason="eos" if status == "done" else "error", tokens=[], text=text,
                                    prompt_tokens=3, cropped=False, seed=1, stats={},
                                    error="" if status == "done" else "worker lost")
    for g in (battle.generation_a, battle.generation_b):
        g.refresh_from_db()
    assert Generation.objects.filter(pk=battle.generation_a_id, status=a).exists()


@pytest.fixture(autouse=True)
def fresh_cache():
    """The leaderboard is cached by vote ids; test databases reuse ids, so each test starts with an empty cache."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()
