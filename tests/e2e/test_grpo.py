"""GRPO in Chromium: a run started from the form and trained by a real train worker; its held-out pass@1 / pass@k
before and after, scored by a real infer worker as evaluation jobs, appear on the run page (the panel polls until
both are in) with the "what each step changed" row, base model vs `<base>-grpo`."""

import re

import pytest
from playwright.sync_api import expect

from apps.registry.models import Model
from tests.data_fixtures import *  # noqa: F401,F403
from tests.e2e.test_training import sign_in
from tests.grpo_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_person_starts_grpo_and_sees_heldout_accuracy_before_and_after(page, processes, screenshots, user,
                                                                         tiny_model, arithmetic_set):
    url = processes.asgi_server()
    train_worker(processes, "train@browser")
    processes.worker("infer", "infer@browser")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, url, user)

    page.goto(f"{url}/training/grpo/new/")
    page.select_option("#id_base_model", value=str(tiny_model.pk))
    page.select_option("#id_corpus", value=str(arithmetic_set.pk))
    for field, value in (("group_size", "3"), ("steps", "3"), ("learning_rate", "0.001"), ("max_new_tokens", "4"),
                         ("prompts_per_step", "2")):
        page.fill(f"#id_{field}", value)
    page.uncheck("#id_lora")
    page.get_by_role("button", name="Start GRPO").click()
    expect(page).to_have_url(re.compile(r"/training/runs/\d+/$"))
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=180_000)
    heldout = page.locator("#grpo-heldout")
    for which in ("before", "after"):
        expect(heldout.locator(f'tr[data-which="{which}"]')).to_contain_text("(k=4)", timeout=120_000)
    made = Model.objects.get(name="tiny-chat-grpo")
    page.reload()
    table = page.locator("#run-evaluations")
    expect(table).to_contain_text("Sums (held_out, k=4)")
    expect(table).to_contain_text(made.name)
    page.screenshot(path=screenshots / "grpo-heldout.png", full_page=True)
    assert not errors, errors
