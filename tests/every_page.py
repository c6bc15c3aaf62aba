"""Every page a signed-in person can open, with data present: a text corpus, a conversation set and a task set, a
trained character tokenizer, a finished pretraining run (metrics, an evaluation, checkpoints), a fine-tuning run, a
GRPO run, a sweep, published models, an arena battle and evaluations. Shared by the Chinese check
(tests/apps/system/test_i18n.py) and the phone check (tests/e2e/test_mobile.py), so both walk the same pages.

`every_page_rows(user, tmp_path)` makes the rows (no worker is needed: jobs are queued on commit and nothing runs
them); PAGES maps a short name to the page's URL as a function of those rows."""

from django.urls import reverse
from django.utils import timezone

from apps.arena import services as arena_services
from apps.corpora import conversations, tasksets
from apps.system import files
from apps.tokenization import services as tokenization_services
from apps.training import finetune, grpo, sweeps
from apps.training.models import Checkpoint, Evaluation as RunEvaluation, Metric, Run, RunEvent
from apps.corpora import services as corpora_services
from tests.apps.evals.factories import finished
from tests.apps.registry.factories import make_model
from tests.data_fixtures import TINY_TEXT
from tests.training_fixtures import make_run

CHATS = [[{"role": "user", "content": "Speak."}, {"role": "assistant", "content": "Resolved."}]] * 12
ANSWERS = [
    {"i": 0, "prompt": "2+2=", "expected": "4", "answer": "4", "correct": True, "n_correct": 1, "k": 1, "reward": 1.0,
     "answers": [{"text": "4", "correct": True, "reward": 1.0, "reason": "4 equals 4", "ended": True, "n_tokens": 1}]},
    {"i": 1, "prompt": "3+4=", "expected": "7", "answer": "8", "correct": False, "n_correct": 0, "k": 1, "reward": 0.0,
     "answers": [{"text": "8", "correct": False, "reward": 0.0, "reason": "8 is not 7", "ended": False,
                  "n_tokens": 3}]},
]


def _finished_run(user, corpus, tokenizer) -> Run:
    """A pretraining run as a worker leaves it: steps, two evaluations, two checkpoints, events, succeeded."""
    run = make_run(user, corpus, tokenizer)
    for step in range(1, 31):
        Metric.objects.create(run=run, step=step, loss=4.0 - step / 10, lr=1e-2, grad_norm=1.0, ms=12.0,
                              tokens_per_s=5300.0, mfu=0.01, elapsed=step * 0.012)
    for step in (10, 20, 30):
        RunEvaluation.objects.create(run=run, step=step, train_loss=3.5 - step / 30, val_loss=3.6 - step / 30,
                                     elapsed=step * 0.012)
    for step, val in ((20, 2.95), (30, 2.6)):
        path = files.artifact_path("runs", run.pk, f"step-{step}.safetensors")
        files.write_atomic(path, b"0" * 16)
        Checkpoint.objects.create(run=run, step=step, path=files.artifact_relative(path), train_loss=val - 0.05,
                                  val_loss=val, size_bytes=16)
    RunEvent.objects.create(run=run, step=30, kind=RunEvent.Kind.GOOD, message="finished")
    Run.objects.filter(pk=run.pk).update(
        status=Run.Status.SUCCEEDED, step=30, train_loss=2.55, val_loss=2.6, best_val_loss=2.6,
        started=timezone.now(), finished=timezone.now(), elapsed_seconds=0.4,
        latest={"loss": 1.0, "lr": 1e-2, "grad_norm": 1.0, "tokens_per_s": 5300.0, "ms": 12.0, "mfu": 0.01},
        device={"kind": "cpu", "name": "Test CPU"}, worker="train@box")
    return Run.objects.get(pk=run.pk)


def every_page_rows(user, tmp_path) -> dict:
    tokenization_services.tokenizer_seed_builtins()  # gpt2 and the other tiktoken encodings (the merge explorer)
    corpus = corpora_services.corpus_create(name="Tiny", description="a few lines", owner=user, text=TINY_TEXT)
    tokenizer = tokenization_services.tokenizer_char_create(corpus=corpus, name="tiny-char")
    chats = conversations.conversations_create(
        name="Tiny chats", owner=user, n_val=3,
        data="".join(f'{{"messages": [{{"role": "user", "content": "{c[0]["content"]}"}}, '
                     f'{{"role": "assistant", "content": "{c[1]["content"]}"}}]}}\n' for c in CHATS).encode())
    tasks = tasksets.taskset_generate(owner=user, name="Sums", task="arithmetic", difficulty=1, seed=0, n_train=40,
                                      n_heldout=8)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model = make_model(tmp_path / "a", name="Tiny model", owner=user, ctx=128)
    other = make_model(tmp_path / "b", name="Other model", ctx=128)
    run = _finished_run(user, corpus, tokenizer)
    sft = finetune.sft_run_create(owner=user, plan=finetune.sft_check(user=user, base=model, corpus=chats,
                                                                      max_steps=5), enqueue=False)
    grpo_run = grpo.grpo_run_create(owner=user, base_model=model, corpus=tasks, enqueue=False,
                                    grpo_config={"group_size": 4, "steps": 3, "learning_rate": 1e-5, "beta": 0,
                                                 "max_new_tokens": 8, "temperature": 1.0, "prompts_per_step": 2})
    sweep = sweeps.sweep_create(owner=user, corpus=corpus, tokenizer=tokenizer, preset_key="tiny-char-sweep",
                                budgets=[5e8, 1e9])
    battle = arena_services.battle_create(user=user, prompt="Say hello.")
    evaluation = finished(model, score=0.5, low=0.1, high=0.9, answers=ANSWERS, n=2)
    finished(model, score=2.5, low=None, high=None, method="loss", task_key="loss:corpus:1:val", dataset="Tiny")
    checkpoint = run.checkpoints.order_by("-step").first()
    return {"corpus": corpus, "tokenizer": tokenizer, "chats": chats, "tasks": tasks, "model": model, "other": other,
            "run": run, "sft": sft, "grpo": grpo_run, "sweep": sweep, "battle": battle, "evaluation": evaluation,
            "checkpoint": checkpoint}


PAGES = {
    "home": lambda r: reverse("system:home"),
    "system": lambda r: reverse("system:status"),
    "login": lambda r: reverse("system:login"),
    "signup": lambda r: reverse("system:signup"),
    "data": lambda r: reverse("corpora:list"),
    "data-upload": lambda r: reverse("corpora:upload"),
    "data-upload-conversations": lambda r: reverse("corpora:upload_conversations"),
    "data-taskset-new": lambda r: reverse("corpora:taskset_new"),
    "data-detail": lambda r: reverse("corpora:detail", args=[r["corpus"].pk]),
    "data-conversations": lambda r: reverse("corpora:detail", args=[r["chats"].pk]),
    "data-taskset": lambda r: reverse("corpora:detail", args=[r["tasks"].pk]),
    "tokenizers": lambda r: reverse("tokenization:playground"),
    "tokenizers-library": lambda r: reverse("tokenization:library"),
    "tokenizer-detail": lambda r: reverse("tokenization:detail", args=[r["tokenizer"].name]),
    "tokenizer-merges": lambda r: reverse("tokenization:merges", args=["gpt2"]) + "?n=40&text=Hello+world",
    "tokenizer-vocab": lambda r: reverse("tokenization:vocab", args=[r["tokenizer"].name]),
    "training": lambda r: reverse("training:runs"),
    "training-new": lambda r: reverse("training:new"),
    "training-finetune": lambda r: reverse("training:finetune"),
    "training-grpo-new": lambda r: reverse("training:grpo_new"),
    "training-sweep-new": lambda r: reverse("training:sweep_new"),
    "training-run": lambda r: reverse("training:run", args=[r["run"].pk]),
    "training-run-sft": lambda r: reverse("training:run", args=[r["sft"].pk]),
    "training-run-grpo": lambda r: reverse("training:run", args=[r["grpo"].pk]),
    "training-compare": lambda r: reverse("training:compare") + f"?run={r['run'].pk}&run={r['sft'].pk}",
    "training-fork": lambda r: reverse("training:fork", args=[r["checkpoint"].pk]),
    "training-sweep": lambda r: reverse("training:sweep", args=[r["sweep"].pk]),
    "generate": lambda r: reverse("inference:generate") + f"?model={r['model'].slug}",
    "generate-api": lambda r: reverse("inference:api"),
    "explorer": lambda r: reverse("explorer:page") + f"?model=model:{r['model'].pk}",
    "models": lambda r: reverse("registry:list"),
    "model-detail": lambda r: reverse("registry:detail", args=[r["model"].slug]),
    "model-import": lambda r: reverse("registry:import"),
    "arena": lambda r: reverse("arena:page"),
    "arena-battle": lambda r: reverse("arena:battle", args=[r["battle"].uid]),
    "arena-leaderboard": lambda r: reverse("arena:leaderboard"),
    "evaluation": lambda r: reverse("evals:detail", args=[r["evaluation"].pk]),
}
