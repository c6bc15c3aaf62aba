"""Share links keep long texts out of the URL: the server stores the text (Share) and the link carries its key. An
over-long link gets a 414 with a message, never a dropped connection or a 500."""

import json
import re
import socket
from urllib.parse import urlparse

import pytest

from apps.explorer.models import Share
from apps.explorer.services import SHARE_INLINE_CHARS
from tests.conftest import Processes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]
HTMX = {"HTTP_HX_REQUEST": "true"}
LONG = "ROMEO: But soft, what light through yonder window breaks? " * 40  # 2,360 characters


@pytest.fixture
def ada(client, owner):
    client.force_login(owner)
    return client


def _boot(html: str) -> dict:
    return json.loads(re.search(r'<script id="explorer-boot" type="application/json">(.*?)</script>', html, re.S).group(1))


def test_a_long_text_gets_a_stored_share_key_and_the_link_opens_the_same_text(ada, ckpt, monkeypatch):
    from apps.explorer import services

    monkeypatch.setattr(services, "_enqueue", lambda trace: None)
    response = ada.post("/explorer/traces/", {"model": ckpt, "text": LONG}, **HTMX)
    assert response.status_code == 200
    key = re.search(r'data-share="([0-9a-f]+)"', response.content.decode()).group(1)
    assert Share.objects.get(key=key).text == LONG.replace("\r\n", "\n")
    page = ada.get("/explorer/", {"model": ckpt, "share": key})
    assert page.status_code == 200
    boot = _boot(page.content.decode())
    assert boot["view"]["text"] == LONG and boot["view"]["share"] == key
    again = ada.post("/explorer/traces/", {"model": ckpt, "text": LONG}, **HTMX)
    assert f'data-share="{key}"' in again.content.decode() and Share.objects.count() == 1  # one text, one link


def test_a_short_text_stays_in_the_link(ada, ckpt, monkeypatch):
    from apps.explorer import services

    monkeypatch.setattr(services, "_enqueue", lambda trace: None)
    response = ada.post("/explorer/traces/", {"model": ckpt, "text": "x" * SHARE_INLINE_CHARS}, **HTMX)
    assert 'data-share=""' in response.content.decode() and not Share.objects.exists()


def test_an_unknown_share_key_is_a_404_with_a_message(ada, ckpt):
    response = ada.get("/explorer/", {"model": ckpt, "share": "0" * 32})
    assert response.status_code == 404 and "share link is unknown" in response.content.decode()


def test_a_link_carrying_more_text_than_the_explorer_takes_is_a_414_with_a_message(ada, ckpt, settings):
    response = ada.get("/explorer/", {"model": ckpt, "text": "x" * (settings.EXPLORER_MAX_TEXT_CHARS + 1)})
    assert response.status_code == 414 and "paste a shorter passage" in response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_30_kb_link_to_the_real_server_gets_a_414_not_a_dropped_connection(tmp_path):
    procs = Processes(tmp_path)
    try:
        url = urlparse(procs.asgi_server())
        with socket.create_connection((url.hostname, url.port), timeout=30) as conn:
            conn.sendall(b"GET /explorer/?text=" + b"a" * 30_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 414"), answer[:200]
        assert b"copy the short link" in answer
    finally:
        procs.stop_all()
