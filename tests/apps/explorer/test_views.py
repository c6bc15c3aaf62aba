import json
import re

import pytest
from django.contrib.auth.models import User

from apps.explorer.models import Trace
from workers import explorer as glue

pytestmark = pytest.mark.usefixtures("redis_clean")
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def ada(client, owner):
    client.force_login(owner)
    return client


def _boot(html: str) -> dict:
    return json.loads(re.search(r'<script id="explorer-boot" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_the_page_offers_the_users_runs_and_loads_without_the_trace(ada, run, ckpt):
    html = ada.get("/explorer/").content.decode()
    assert f'value="{ckpt}"' in html and "tiny · step 200" in html
    assert '"three": "/static/vendor/three/three.module.js"' in html, "three.js comes through the import map"
    boot = _boot(html)
    assert boot["source"]["ref"] == ckpt and boot["source"]["token_limit"] == 32
    assert [c["step"] for c in boot["checkpoints"]] == [0, 100, 200]
    assert 'id="across"' in html, "a run with several checkpoints gets the across-training slider"
    assert not Trace.objects.exists(), "showing the page computes nothing; the page asks for the trace itself"


def test_the_view_state_comes_from_the_url(ada, run):
    first = run[1][0]
    html = ada.get("/explorer/", {"model": f"checkpoint:{first.pk}", "text": "Hi there", "layer": 1, "head": 1,
                                  "cam": "top", "tok": 3}).content.decode()
    boot = _boot(html)
    assert boot["view"] == {"model": f"checkpoint:{first.pk}", "text": "Hi there", "layer": 1, "head": 1, "tok": 3,
                            "cam": "top", "share": ""}
    assert ">Hi there</textarea>" in html
    assert f'value="checkpoint:{run[1][-1].pk}" data-detail' in html
    assert re.search(rf'value="checkpoint:{run[1][-1].pk}"[^>]* selected>', html), "the picker names the run"
    garbage = _boot(ada.get("/explorer/", {"layer": "x", "head": "-4", "cam": "<script>"}).content.decode())["view"]
    assert garbage["layer"] == 0 and garbage["head"] == 0 and garbage["cam"] == "angle"


def test_an_unknown_or_deleted_model_in_the_url_says_so(ada, run):
    response = ada.get("/explorer/", {"model": "checkpoint:999"})
    assert response.status_code == 404
    assert "does not exist any more" in response.content.decode()
    assert "Trace" in response.content.decode(), "the form is still there to pick another"


def test_a_visitor_with_no_model_is_told_how_to_get_one(client, db):
    html = client.get("/explorer/").content.decode()
    assert 'id="no-models"' in html and "SmolLM2" in html


def test_asking_for_a_trace_returns_the_status_that_watches_it(ada, ckpt):
    response = ada.post("/explorer/traces/", {"model": ckpt, "text": "ROMEO"}, **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    trace = Trace.objects.get()
    assert f'ws-connect="/ws/explorer/traces/{trace.key}/"' in html
    assert 'data-status="queued"' in html and "hx-trigger=\"every 4s\"" in html
    assert "No infer worker is running" in html


def test_bad_requests_get_their_message_as_a_fragment(ada, ckpt, settings):
    empty = ada.post("/explorer/traces/", {"model": ckpt, "text": "  "}, **HTMX)
    assert empty.status_code == 400 and "Type some text" in empty.content.decode()
    unknown = ada.post("/explorer/traces/", {"model": "model:424242", "text": "hi"}, **HTMX)
    assert unknown.status_code == 404 and "pick another model" in unknown.content.decode()
    settings.EXPLORER_TRACES_PER_MINUTE = 1
    for k in range(2):
        assert ada.post("/explorer/traces/", {"model": ckpt, "text": f"t{k}"}, **HTMX).status_code == 200
    flood = ada.post("/explorer/traces/", {"model": ckpt, "text": "t3"}, **HTMX)
    assert flood.status_code == 429 and "try again in" in flood.content.decode()
    assert ada.get("/explorer/traces/", **HTMX).status_code == 405


def test_without_htmx_the_form_lands_on_the_page_for_that_text(ada, ckpt):
    response = ada.post("/explorer/traces/", {"model": ckpt, "text": "ROMEO"})
    assert response.status_code == 302 and response["Location"].startswith("/explorer/?model=checkpoint")
    refused = ada.post("/explorer/traces/", {"model": ckpt, "text": ""})
    assert refused.status_code == 400 and "Type some text" in refused.content.decode()


def test_a_ready_trace_is_served_to_its_owner_only(ada, client, ckpt):
    ada.post("/explorer/traces/", {"model": ckpt, "text": "ROMEO"}, **HTMX)
    trace = Trace.objects.get()
    assert ada.get(f"/explorer/traces/{trace.key}/data/").status_code == 404, "not ready yet"
    glue.trace_compute(trace_id=trace.pk)
    status = ada.get(f"/explorer/traces/{trace.key}/status/").content.decode()
    assert 'data-status="ready"' in status and "Traced <strong>5</strong> tokens" in status
    assert "hx-trigger" not in status, "a finished trace stops polling"
    data = ada.get(f"/explorer/traces/{trace.key}/data/")
    assert data.status_code == 200 and b"".join(data.streaming_content)[:4] == b"LLTR"
    client.logout()
    mallory = User.objects.create_user("mallory", password="pw-mallory-123")
    client.force_login(mallory)
    assert client.get(f"/explorer/traces/{trace.key}/data/").status_code == 404
    assert client.get(f"/explorer/traces/{trace.key}/status/").status_code == 404
    assert client.get("/explorer/traces/not-a-key/status/").status_code == 404


def test_the_same_text_again_is_answered_from_the_cache(ada, ckpt):
    ada.post("/explorer/traces/", {"model": ckpt, "text": "ROMEO"}, **HTMX)
    glue.trace_compute(trace_id=Trace.objects.get().pk)
    html = ada.post("/explorer/traces/", {"model": ckpt, "text": "ROMEO"}, **HTMX).content.decode()
    assert 'data-status="ready"' in html and "ws-connect" not in html
    assert Trace.objects.count() == 1


def test_the_explorer_is_in_the_navigation_and_no_longer_planned(client, db):
    html = client.get("/").content.decode()
    assert 'href="/explorer/" data-nav="explorer"' in html
    assert "Not built yet" not in client.get("/explorer/").content.decode()
