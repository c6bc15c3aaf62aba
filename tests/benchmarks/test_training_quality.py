"""Quality: the "Shakespeare char, CPU" preset, 2,000 steps on shakespeare.txt, trained by a real train worker
through the real path; its validation loss must reach 1.95 or less (nanoGPT reports about 1.88 for this recipe on its
slightly different text). Prints the figure, the time and the speed, and saves a screenshot of the dashboard's curve
($LAB_SCREENSHOTS, else the test's temporary folder). Takes a few minutes on two CPU cores.
"""

import os
import shutil
import time
from pathlib import Path

import pytest

from apps.training import services
from apps.training.forms import RunForm
from apps.training.models import Evaluation, Metric, Run
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

TARGET = 1.95
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def test_the_cpu_preset_reaches_its_published_validation_loss(processes, user, shakespeare, tmp_path):
    corpus, tokenizer, _ = shakespeare
    initial = RunForm.initial_for(preset_key="shakespeare-char-cpu", user=user)
    form = RunForm({k: v for k, v in initial.items() if v is not None and v is not False}, user=user)
    assert form.is_valid(), form.errors
    model_cfg, train_cfg = form.configs()
    assert (model_cfg["n_layer"], model_cfg["n_embd"], model_cfg["block_size"], train_cfg["batch_size"],
            train_cfg["max_steps"]) == (4, 128, 64, 12, 2000)
    url = processes.asgi_server()
    processes.worker("train", "train@quality")
    run = services.run_create(owner=user, corpus=corpus, tokenizer=tokenizer, model_config=model_cfg,
                              train_config=train_cfg, preset="shakespeare-char-cpu", name="quality benchmark")
    started = time.monotonic()
    wait_for(lambda: Run.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout=3600,
             what="the 2,000-step run", interval=2)
    wall = time.monotonic() - started
    run.refresh_from_db()
    assert run.status == "succeeded", run.reason
    evals = list(Evaluation.objects.filter(run=run).order_by("step").values_list("step", "train_loss", "val_loss"))
    final = evals[-1]
    speeds = sorted(Metric.objects.filter(run=run).values_list("tokens_per_s", flat=True))
    mfus = sorted(m for m in Metric.objects.filter(run=run).values_list("mfu", flat=True) if m is not None)
    shot = Path(os.environ.get("LAB_SCREENSHOTS", tmp_path)) / "training-quality-curve.png"
    screenshot(url, user, run, shot)
    print(f"\n'Shakespeare char, CPU' preset, 2,000 steps on shakespeare.txt ({run.data.get('corpus')} × "
          f"{run.data.get('tokenizer')}, vocab {model_cfg['vocab_size']}) on {run.worker}")
    print("  step  train   val")
    for step, train_loss, val_loss in evals:
        print(f"  {step:4d}  {train_loss:.4f}  {val_loss:.4f}")
    print(f"  final val loss {final[2]:.4f}, best {run.best_val_loss:.4f} (target <= {TARGET}: "
          f"{'ok' if final[2] <= TARGET else 'MISSED'}; nanoGPT ~1.88)")
    print(f"  wall time {wall / 60:.1f} min (training {run.elapsed_seconds / 60:.1f} min), median "
          f"{speeds[len(speeds) // 2]:,.0f} tokens/s, median MFU {mfus[len(mfus) // 2]:.1%}; dashboard: {shot}")
    assert final[2] <= TARGET


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
