"""`manage.py train`: the same form, service and glue as the browser, from a terminal."""

import io

import pytest
from django.core.management import CommandError, call_command

from apps.training.models import Metric, Run

pytestmark = pytest.mark.django_db(transaction=True)  # the glue's helper threads need committed rows

TINY = ["n_layer=2", "n_head=2", "n_embd=32", "block_size=16", "batch_size=4", "max_steps=20", "eval_interval=10",
        "checkpoint_interval=10", "eval_iters=2", "warmup_steps=2"]


def train(*args):
    out = io.StringIO()
    call_command("train", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_it_trains_a_preset_with_overrides_here_and_the_run_shows_like_any_other(user, tiny_corpus, char_tok,
                                                                                  encoded, no_enqueue):
    sets = [a for s in TINY for a in ("--set", s)]
    out = train("--preset", "shakespeare-char-cpu", "--corpus", "Tiny", "--tokenizer", "tiny-char", "--user", "ada",
                "--name", "from the terminal", *sets)
    run = Run.objects.get()
    assert run.name == "from the terminal" and run.owner == user and run.preset == "shakespeare-char-cpu"
    assert run.status == "succeeded" and run.worker.startswith("manage.py@")
    assert run.model_config["n_layer"] == 2 and run.train_config["learning_rate"] == 1e-3  # the preset's, kept
    assert Metric.objects.filter(run=run).count() == 20
    assert f"dashboard at /training/runs/{run.pk}/" in out
    assert "step 10: train loss" in out and "step 10: loss" in out and "--- sample at step 10 ---" in out
    assert f"Run #{run.pk} succeeded" in out


def test_it_refuses_what_the_form_refuses_naming_the_field(user, tiny_corpus, char_tok):
    with pytest.raises(CommandError) as refused:
        train("--corpus", "Tiny", "--tokenizer", "tiny-char", "--user", "ada", "--set", "n_embd=100",
              "--set", "n_head=3")
    assert "n_embd: n_embd (100) must be divisible by n_head (3)" in str(refused.value)
    with pytest.raises(CommandError, match="expected KEY=VALUE"):
        train("--user", "ada", "--set", "vocab_size=5")
    with pytest.raises(CommandError, match="no corpus named"):
        train("--user", "ada", "--corpus", "Nope")
    assert not Run.objects.exists()


def test_queue_only_puts_it_in_the_train_queue(user, tiny_corpus, char_tok, monkeypatch):
    from workers import tasks

    sent = []
    monkeypatch.setattr(tasks.run_train, "delay", lambda run_id: sent.append(run_id) or type("R", (), {"id": "t"}))
    sets = [a for s in TINY for a in ("--set", s)]
    out = train("--corpus", "Tiny", "--tokenizer", "tiny-char", "--user", "ada", "--queue", *sets)
    run = Run.objects.get()
    assert sent == [run.pk] and run.status == "queued" and "Queued for a train worker." in out
