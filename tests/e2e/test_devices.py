"""One run over two processes, from the browser: a person asks for devices=2 on the run form, a real train worker
runs it as a gloo process group on the CPU (itself rank 0, one child rank), the dashboard follows it to the end, and
its curve is the curve of the same run on one process (the global batch is shared, not doubled)."""

import re

import pytest
import torch
from playwright.sync_api import expect

from apps.training import services
from apps.training.models import Metric, Run
from tests.data_fixtures import *  # noqa: F401,F403
from tests.e2e.test_training import TINY_FORM, sign_in
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker
from workers import training as glue

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

STEPS = 12
FORM = TINY_FORM | {"max_steps": str(STEPS), "eval_interval": str(STEPS), "checkpoint_interval": "0"}  # end only


def losses_of(run) -> list[float]:
    return list(Metric.objects.filter(run=run).order_by("step").values_list("loss", flat=True))


def test_a_two_device_run_from_the_browser_draws_the_one_device_curve(page, processes, user, no_enqueue, tiny_corpus,
                                                                      char_tok, encoded):
    url = processes.asgi_server()
    train_worker(processes, "train@ddp")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, url, user)
    page.goto(url + "/training/new/")
    page.select_option("#id_corpus", label="Tiny")
    page.select_option("#id_tokenizer", label="tiny-char")
    for name, value in FORM.items():
        page.fill(f"#id_{name}", value)
    page.fill("#id_devices", "2")  # batch_size 4: two rows per process
    page.fill("#id_name", "two devices")
    page.get_by_role("button", name="Start training").click()
    expect(page).to_have_url(re.compile(r"/training/runs/\d+/$"))
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#stat-step")).to_have_text(str(STEPS))
    assert int(page.locator("#loss-chart").get_attribute("data-points")) == STEPS + 1  # steps 1..12 and step 0's eval
    assert not errors, errors

    two = Run.objects.get(name="two devices")
    assert two.train_config["devices"] == 2 and two.worker == "train@ddp"
    one = services.run_create(owner=user, corpus=tiny_corpus, tokenizer=char_tok, model_config=two.model_config,
                              train_config=two.train_config | {"devices": 1}, name="one device", enqueue=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker trains (OMP_NUM_THREADS=1): tiny steps gain nothing from more
    try:
        assert glue.train_run(one.pk, worker="train@here") == "succeeded", Run.objects.get(pk=one.pk).reason
    finally:
        torch.set_num_threads(threads)
    # float32 gradients all-reduced in another order: ~1e-7 relative; 1e-5 as tests/workers/test_distributed.py
    assert len(losses_of(two)) == STEPS
    assert losses_of(two) == pytest.approx(losses_of(one), rel=1e-5)
