"""Fine-tuning in Chromium: the loss mask of a conversation set previewed through a model's chat template, a
fine-tune submitted from the browser and trained by a real train worker, its answers on the dashboard, and the
registered `<base>-sft` chatting on the Generate page through a real infer worker."""

import json
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from apps.registry.models import Model
from tests.data_fixtures import *  # noqa: F401,F403
from tests.e2e.test_training import sign_in
from tests.sft_fixtures import base, chats  # noqa: F401  (fixtures)
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_person_previews_the_mask_fine_tunes_and_chats_with_the_result(page, processes, screenshots, user,
                                                                         base, chats):
    url = processes.asgi_server()
    train_worker(processes, "train@browser")
    processes.worker("infer", "infer@browser")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, url, user)

    page.goto(f"{url}/data/")
    page.locator('[data-corpus="Tiny chats"]').click()
    preview = page.locator("#conversation-preview")
    expect(preview).to_contain_text("ChatML")
    trained = "".join(preview.locator('[data-trained="1"]').all_text_contents())
    assert trained == "Resolved.<|im_end|>", "only the assistant's answer and its end of turn are trained on"
    page.fill("#id_index", "1")
    page.locator("#id_index").dispatch_event("change")
    expect(preview).to_contain_text("Conversation 1")
    page.screenshot(path=screenshots / "sft-preview.png", full_page=True)

    page.goto(f"{url}/training/")
    page.get_by_role("link", name="Fine-tune a model").click()
    page.select_option("#id_base_model", value=base.slug)
    page.select_option("#id_corpus", label="Tiny chats")
    page.check("input[name=method][value=lora]")
    page.fill("#id_lora_targets", "c_attn")
    page.fill("#id_max_steps", "40")
    page.fill("#id_batch_size", "4")
    page.fill("#id_learning_rate", "0.01")
    page.fill("#id_eval_interval", "20")
    page.get_by_role("button", name="Fine-tune").click()
    expect(page).to_have_url(re.compile(r"/training/runs/\d+/$"))
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#samples")).to_contain_text("Assistant:")
    expect(page.locator("#run-timeline")).to_contain_text("Registered as the model tiny-sft")
    page.screenshot(path=screenshots / "sft-dashboard.png", full_page=True)

    model = Model.objects.get(name="tiny-sft")
    page.goto(f"{url}/generate/?model={model.slug}")
    expect(page.locator("#ws-status")).to_have_text("live")
    page.click("#tab-chat")
    page.fill("#message", "Speak.")
    page.click("[data-preset=greedy]")
    page.fill("#max_new_tokens", "24")  # 40 steps teach a tiny model little: it may not end its turn yet
    page.click("#go")
    expect(page.locator('.out-panel[data-panel="a"] .out-status')).to_have_text("done", timeout=60_000)
    expect(page.locator('.out-panel[data-panel="a"] .bubble.assistant')).not_to_be_empty()
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "sft-chat.png", full_page=True)
    assert not errors, errors

    # ...and through the OpenAI-style API, once published
    Model.objects.filter(pk=model.pk).update(status=Model.Status.PUBLISHED)
    request = urllib.request.Request(f"{url}/v1/chat/completions", method="POST", data=json.dumps({
        "model": model.slug, "messages": [{"role": "user", "content": "Speak."}], "max_tokens": 8,
        "temperature": 0}).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    assert answer["model"] == model.slug and answer["choices"][0]["message"]["role"] == "assistant"
    assert answer["choices"][0]["finish_reason"] in ("stop", "length") and answer["usage"]["completion_tokens"] >= 1
