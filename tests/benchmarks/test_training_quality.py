"""Quality: the "Shakespeare char, CPU" preset, 2,000 steps on shakespeare.txt, trained by a real train worker
through the real path; its validation loss must reach 1.95 or less (nanoGPT reports about 1.88 for this recipe on its
slightly different text). The newcomer's "Shakespeare char, 1 minute" preset (1,000 steps) must reach 2.05 and end
with a checkpoint the run page calls worth trying. Prints the figures, the time and the speed, and saves a screenshot
of the dashboard's curve ($LAB_SCREENSHOTS, else the test's temporary folder). Takes a few minutes on two CPU cores.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

from apps.training import selectors, services
from apps.training.forms import RunForm
from apps.training.models import Evaluation, Metric, Run
from apps.training.presets import PRESETS
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

# preset: (val loss to reach, max_steps)
TARGETS = {"shakespeare-char-cpu": (1.95, 2000), "shakespeare-char-minute": (2.05, 1000)}
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.parametrize("preset", list(TARGETS))
def test_the_cpu_presets_reach_their_validation_loss(processes, user, shakespeare, tmp_path, preset):
    target, max_steps = TARGETS[preset]
    corpus, tokenizer, _ = shakespeare
    initial = RunForm.initial_for(preset_key=preset, user=user)
    form = RunForm({k: v for k, v in initial.items() if v is not None and v is not False}, user=user)
    assert form.is_valid(), form.errors
    model_cfg, train_cfg = form.configs()
    assert (model_cfg["n_layer"], model_cfg["n_embd"], model_cfg["block_size"], train_cfg["batch_size"],
            train_cfg["max_steps"]) == (4, 128, 64, 12, max_steps)
    url = processes.asgi_server()
    processes.worker("train", "train@quality")
    run = services.run_create(owner=user, corpus=corpus, tokenizer=tokenizer, model_config=model_cfg,
                              train_config=train_cfg, preset=preset, name="quality benchmark")
    started = time.monotonic()
    wait_for(lambda: Run.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout=3600,
             what=f"the {max_steps:,}-step run", interval=2)
    wall = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == "succeeded", run.reason
    evals = list(Evaluation.objects.filter(run=run).order_by("step").values_list("step", "train_loss", "val_loss"))
    final = evals[-1]
    speeds = sorted(Metric.objects.filter(run=run).values_list("tokens_per_s", flat=True))
    mfus = sorted(m for m in Metric.objects.filter(run=run).values_list("mfu", flat=True) if m is not None)
    shot = Path(os.environ.get("LAB_SCREENSHOTS", tmp_path)) / f"training-quality-curve-{preset}.png"
    screenshot(url, user, run, shot)
    print(f"\n'{PRESETS[preset].label}' preset, {max_steps:,} steps on shakespeare.txt ({run.data.get('corpus')} × "
          f"{run.data.get('tokenizer')}, vocab {model_cfg['vocab_size']}) on {run.worker}")
    print("  step  train   val")
    for step, train_loss, val_loss in evals:
        print(f"  {step:4d}  {train_loss:.4f}  {val_loss:.4f}")
    print(f"  final val loss {final[2]:.4f}, best {run.best_val_loss:.4f} (target <= {target}: "
          f"{'ok' if final[2] <= target else 'MISSED'}; nanoGPT ~1.88 for the CPU recipe)")
    print(f"  wall time {wall / 60:.1f} min (training {run.elapsed_seconds / 60:.1f} min), median "
          f"{speeds[len(speeds) // 2]:,.0f} tokens/s, median MFU {mfus[len(mfus) // 2]:.1%}; dashboard: {shot}")
    assert final[2] <= target
    advice = selectors.checkpoint_advice(run=run, checkpoints=selectors.run_checkpoints(run=run))
    print(f"  unigram baseline {advice['unigram']:.3f}: worth trying below {advice['threshold']:.3f}, "
          f"since step {advice['first_ready'].step if advice['first_ready'] else '-'}")
    assert advice["ready"]


def screenshot(url, user, run, path: Path) -> None:
    if not Path(CHROMIUM).exists():
        print(f"  (no screenshot: no Chromium at {CHROMIUM})")
        return
    from django.test import Client
    from playwright.sync_api import sync_playwright

    client = Client()
    client.force_login(user)
    session = client.cookies["sessionid"].value
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu",
                                                                     "--disable-background-networking"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_cookies([{"name": "sessionid", "value": session, "url": url}])
        page = context.new_page()
        page.goto(f"{url}/training/runs/{run.pk}/")
        page.wait_for_selector("#loss-chart canvas")
        page.wait_for_timeout(1500)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        browser.close()
