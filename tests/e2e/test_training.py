"""The training pages in Chromium: a run submitted from the browser trains on a real worker while its curve draws;
the dashboard recovers from a Redis restart with every step once; impossible settings are refused live; the chart's
arithmetic (merging by step, spike-keeping downsampling, smoothing) and the redraw batching checked in the browser's
own JavaScript engine; the GRPO dashboard's history, live steps and legends."""

import re

import pytest
from playwright.sync_api import expect

from apps.training.models import Run
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.grpo_fixtures import arithmetic_set, tiny_model  # noqa: F401  (fixtures)
from tests.training_fixtures import train_worker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

TINY_FORM = {"n_layer": "2", "n_head": "2", "n_embd": "32", "block_size": "16", "batch_size": "4",
             "max_steps": "150", "eval_interval": "50", "checkpoint_interval": "50", "learning_rate": "0.01",
             "min_lr": "0.001", "warmup_steps": "5"}


def sign_in(page, url, user):
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "analytical-engine-1843")
    page.get_by_role("button", name="Sign in").click()


def test_a_run_submitted_from_the_browser_trains_while_its_curve_draws(page, processes, screenshots, user,
                                                                         no_enqueue, tiny_corpus, char_tok, encoded):
    url = processes.asgi_server()
    train_worker(processes, "train@browser")
    errors = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    sign_in(page, url, user)
    page.goto(url + "/training/")
    page.get_by_role("link", name="New run").click()
    page.select_option("#id_corpus", label="Tiny")
    page.select_option("#id_tokenizer", label="tiny-char")
    for name, value in TINY_FORM.items():
        page.fill(f"#id_{name}", value)
    page.fill("#id_name", "browser run")
    # the estimates follow the form: 2 layers of 32 are a few tens of thousands of parameters
    expect(page.locator('[data-estimate="params"]')).to_have_text(re.compile(r"^\d+(\.\d+)? k$"))
    page.screenshot(path=screenshots / "training-new.png", full_page=True)
    page.get_by_role("button", name="Start training").click()
    expect(page).to_have_url(re.compile(r"/training/runs/\d+/$"))
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.locator("#run-status")).to_have_text("running", timeout=60_000)
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=90_000)
    expect(page.locator("#stat-step")).to_have_text("150")
    points = int(page.locator("#loss-chart").get_attribute("data-points"))
    assert points == 151, "every step (1..150) and the step-0 evaluation are on the chart"
    expect(page.locator("#samples li")).to_have_count(4)  # steps 0, 50, 100, 150
    expect(page.locator("#run-checkpoints tbody tr")).not_to_have_count(0)
    expect(page.locator("#run-head .reason.ok")).to_contain_text("Finished 150 steps")
    # the legends show the latest values until hovered, not uPlot's "--"
    for chart in ("#loss-chart", "#opt-chart"):
        values = page.locator(f"{chart} .u-legend .u-series:not(:first-child) .u-value").all_text_contents()
        assert values and "--" not in values[:2], (chart, values)
    page.locator("#x-axis").select_option("tokens")
    page.locator("#log-scale").check()
    assert int(page.locator("#loss-chart").get_attribute("data-points")) == 151
    page.screenshot(path=screenshots / "training-dashboard.png", full_page=True)
    assert not errors, errors
    run = Run.objects.get(name="browser run")
    assert run.status == "succeeded" and run.metrics.count() == 150


def test_the_dashboard_recovers_from_a_redis_restart_mid_run_with_every_step_once(page, processes, private_redis, user,
                                                                                  tiny_corpus, char_tok, encoded):
    """Redis killed and started again without its data while the page watches: the socket stays open, the server
    joins it to the run's group again and asks the page to catch up, and the chart ends with every step exactly
    once — the ones published while Redis was down come from the database."""

    from apps.system.management.commands.lab import worker_command
    from apps.training.models import Metric
    from tests.conftest import wait_for
    from tests.training_fixtures import make_run

    env = {"LAB_TEST_REDIS_URL": private_redis.url}
    url = processes.asgi_server(**env)
    cmd = worker_command("train")
    cmd[cmd.index("-n") + 1] = "train@watched"
    # queued with no message on the private Redis: the worker's stranded-run sweep enqueues it after 2 s
    worker = processes.start("train-watched", cmd, OMP_NUM_THREADS="1", TRAINING_STRANDED_SECONDS="2", **env)
    run = make_run(user, tiny_corpus, char_tok, enqueue=False, max_steps=400, eval_interval=50,
                   checkpoint_interval=50)
    errors = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    sign_in(page, url, user)
    page.goto(f"{url}/training/runs/{run.pk}/")
    expect(page.locator("#connection")).to_have_text("live")
    wait_for(lambda: int(page.locator("#stat-step").text_content() or 0) > 40, timeout=120,
             what="the page to show the run training a while", proc=worker, interval=0.1)
    private_redis.restart(down_seconds=2)  # the steps trained meanwhile are published into the void
    wait_for(lambda: Run.objects.get(pk=run.pk).status in ("succeeded", "failed"), timeout=180,
             what="the run to finish", proc=worker)
    assert Run.objects.get(pk=run.pk).status == "succeeded", Run.objects.get(pk=run.pk).reason
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
    expect(page.locator("#stat-step")).to_have_text("400")
    expect(page.locator("#loss-chart")).to_have_attribute("data-points", "401")  # steps 1..400 and the step-0 eval
    expect(page.locator("#connection")).to_have_text("live")
    assert list(Metric.objects.filter(run=run).values_list("step", flat=True)) == list(range(1, 401))
    assert not errors, errors


def test_impossible_settings_are_refused_live_with_the_field_named(page, processes, user, tiny_corpus, char_tok):
    url = processes.asgi_server()
    sign_in(page, url, user)
    page.goto(url + "/training/new/")
    page.select_option("#id_corpus", label="Tiny")
    page.select_option("#id_tokenizer", label="tiny-char")
    page.fill("#id_n_head", "3")
    page.fill("#id_n_embd", "100")
    refused = page.locator("[data-testid=refused]")
    expect(refused).to_contain_text("n_embd (100) must be divisible by n_head (3): try n_embd=96 or 102")
    page.fill("#id_n_embd", "96")
    expect(refused).to_have_count(0)
    page.fill("#id_block_size", "1000")
    expect(refused).to_contain_text("block_size (1000) is larger than the validation split")
    page.get_by_role("button", name="Start training").click()  # the server says the same, on the field
    expect(page.locator('[data-field="block_size"] .errors')).to_contain_text("larger than the validation split")
    assert not Run.objects.exists()
    page.fill("#id_block_size", "16")
    page.get_by_role("button", name="Start training").click()
    expect(page.locator("#queue-info")).to_contain_text("#1 in line")
    expect(page.locator("#queue-info")).to_contain_text("0 train workers online")
    assert Run.objects.get().model_config["n_embd"] == 96


def test_the_chart_arithmetic_in_the_browser(page, processes):
    url = processes.asgi_server()
    page.goto(url + "/")
    result = page.evaluate("""async () => {
        const s = await import('/static/js/training/series.js');
        const rows = [[1, 3], [2, 2.9], [4, 2.7]];
        s.mergeRows(rows, [[3, 2.8], [4, 2.6], [5, 2.5], [2, 2.9]]);   // overlap, a gap filled, a duplicate
        const values = Array.from({length: 1000}, (_, i) => 2 + Math.sin(i) * 0.01);
        values[737] = 9;                                                  // one spike among 1000 points
        const keep = s.minMaxIndices(values, 50);
        const e = s.ema([1, 1, 1, null, 1], 0.9);
        return {steps: rows.map(r => r[0]), last: rows[3][1], kept: keep.length, spike: keep.includes(737),
                ema: e, raw: s.ema([1, 2, 3], 0), durations: [5, 185, 7260, 90000].map(s.duration)};
    }""")
    assert result["steps"] == [1, 2, 3, 4, 5] and result["last"] == 2.6
    assert result["kept"] <= 100 and result["spike"], "downsampling keeps the spike"
    assert result["ema"][3] is None and result["ema"] == pytest.approx([1, 1, 1, None, 1]), \
        "debiased: a constant stays constant, a missing value stays missing"
    assert result["raw"] == [1, 2, 3]
    assert result["durations"] == ["5 s", "3 min 05 s", "2 h 01 min", "1 d 1 h"], "no catalogue here: identity gettext"


def test_redraws_are_batched_a_few_a_second_and_wait_while_the_tab_is_hidden(page, processes):
    url = processes.asgi_server()
    page.goto(url + "/")
    result = page.evaluate("""async () => {
        const { redrawer } = await import('/static/js/system/redraw.js');
        const sleep = ms => new Promise(r => setTimeout(r, ms));
        let draws = 0;
        const redraw = redrawer(() => { draws++; }, { everyMs: 250 });
        const t0 = performance.now();
        while (performance.now() - t0 < 1000) { redraw(); await sleep(5); }   // ~200 requests in a second
        await sleep(300);
        const visible = draws;
        Object.defineProperty(document, "hidden", { value: true, configurable: true });
        document.dispatchEvent(new Event("visibilitychange"));
        await sleep(300);                     // let a frame already asked for run (it must not draw)
        draws = 0;
        for (let i = 0; i < 50; i++) { redraw(); await sleep(10); }
        await sleep(400);
        const hidden = draws;
        Object.defineProperty(document, "hidden", { value: false, configurable: true });
        document.dispatchEvent(new Event("visibilitychange"));
        await sleep(400);
        return { visible, hidden, shown: draws };
    }""")
    assert 3 <= result["visible"] <= 6, f"about 4 draws in a second of requests, got {result['visible']}"
    assert result["hidden"] == 0, "nothing is drawn while the tab is hidden"
    assert result["shown"] == 1, "one draw catches up when the tab is shown again"


def test_a_grpo_dashboard_draws_its_history_then_live_steps_with_the_latest_values_in_its_legends(
        page, processes, user, tiny_model, arithmetic_set, monkeypatch):
    from apps.system.realtime import publish
    from apps.training import grpo as grpo_app
    from apps.training import realtime, services
    from apps.training.models import Metric

    monkeypatch.setattr(services, "enqueue_on_commit", lambda *args: None)
    run = grpo_app.grpo_run_create(owner=user, base_model=tiny_model, corpus=arithmetic_set,
                                   grpo_config=dict(steps=3, prompts_per_step=2, group_size=4, max_new_tokens=8))
    extra = {"reward": 0.5, "accuracy": 0.25, "reward_std": 0.1, "response_len": 6, "kl": 0.0, "entropy": 1.2}
    Metric.objects.create(run=run, step=1, loss=0.1, lr=1e-5, grad_norm=1, ms=10, tokens_per_s=5, elapsed=1,
                          extra=extra)
    url = processes.asgi_server()
    errors = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    sign_in(page, url, user)
    page.goto(f"{url}/training/runs/{run.pk}/")
    expect(page.locator("#connection")).to_have_text("live")
    legend = page.locator("#reward-chart .u-legend .u-series:not(:first-child) .u-value")
    expect(legend.first).to_have_text("0.5")  # the latest value, not "--", before any hover
    row = [2, 0.1, 1e-5, 1.0, 10.0, 5.0, None, 2.0, extra | {"reward": 0.75}]
    publish(realtime.run_group(run.pk), realtime.metrics_event(
        run.pk, steps=[row], evals=[], epoch=run.epoch,
        progress={"step": 2, "max_steps": 3, "latest": {"reward": 0.75, "accuracy": 0.25}}))
    expect(page.locator("#stat-step")).to_have_text("2")
    expect(page.locator("#stat-reward")).to_have_text("0.750")
    expect(legend.first).to_have_text("0.75")
    assert not errors, errors
