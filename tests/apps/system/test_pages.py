import re
import time

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.system.services import worker_record_heartbeat

pytestmark = pytest.mark.django_db

NAV = ["Data", "Tokenizers", "Training", "Generate", "Arena", "Explorer", "Models", "System"]


def test_home_explains_the_four_steps_each_linked_to_its_page(client):
    html = client.get("/").content.decode()
    for title, url in [("Data", "/data/"), ("Tokens", "/tokenizers/"), ("Pretraining", "/training/"),
                       ("Inference", "/generate/"), ("Inside the model", "/explorer/")]:
        assert f'<h2><a class="step-link" href="{url}">{title}</a></h2>' in html
    # a newcomer starts at the data
    assert re.search(r'<a class="button big" id="start-journey" href="/data/">\s*Start the journey', html)


def test_home_shows_the_signed_in_persons_own_corpus_run_and_model(client, tmp_path):
    from apps.corpora.services import corpus_create
    from tests.apps.registry.factories import make_model
    from tests.training_fixtures import make_run
    from apps.tokenization.services import tokenizer_char_create

    ada = User.objects.create_user("ada", password="pw-analytical-1843")
    corpus = corpus_create(name="Ada's notes", description="", owner=ada, text="hello world\n" * 200)
    make_run(ada, corpus, tokenizer_char_create(corpus=corpus, name="ada-char"))
    make_model(tmp_path, name="Ada's model", owner=ada)
    User.objects.create_user("bob", password="pw-difference-1822")
    client.login(username="bob", password="pw-difference-1822")
    assert "Ada's notes" not in client.get("/").content.decode().replace("&#x27;", "'")  # only one's own
    client.login(username="ada", password="pw-analytical-1843")
    html = client.get("/").content.decode().replace("&#x27;", "'")
    assert f'href="/data/{corpus.pk}/">Ada\'s notes</a>' in html
    assert "Yours:" in html and ">tiny</a>" in html  # the run
    assert "Ada's model</a>" in html and "/generate/?model=" in html
    # the next step after the furthest one reached (a model) is the explorer
    assert re.search(r'id="start-journey" href="/explorer/">\s*Continue the journey: Inside the model', html)


@pytest.mark.parametrize("url, next_url", [("/data/", "/tokenizers/"), ("/tokenizers/", "/training/"),
                                           ("/generate/", "/explorer/")])
def test_each_steps_page_ends_with_a_link_to_the_next_step(client, url, next_url):
    html = client.get(url).content.decode()
    box = html[html.index('id="next-step"'):]
    assert f'href="{next_url}"' in box[:box.index("</aside>")]


def test_pages_off_the_journey_have_no_next_step_and_every_page_links_the_favicon(client):
    html = client.get("/system/").content.decode()
    assert 'id="next-step"' not in html
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in html
    assert client.get("/static/favicon.svg").status_code == 200


@pytest.mark.parametrize("url", ["/", "/system/", "/data/", "/accounts/login/"])
def test_every_page_has_the_navigation_and_marks_the_current_one(client, url):
    html = client.get(url).content.decode()
    positions = [html.index(f">{label}</a>") for label in NAV]
    assert positions == sorted(positions), "navigation in the order of the journey"
    if url in ("/system/", "/data/"):
        assert 'aria-current="page"' in html


def test_every_navigation_link_leads_to_a_working_page(client):
    html = client.get("/").content.decode()
    links = re.findall(r'<a href="([^"]+)" data-nav="[^"]+"', html)
    assert len(links) == len(NAV)
    for url in links:
        response = client.get(url)
        assert response.status_code == 200, url
        assert "<h1" in response.content.decode(), url


def test_unknown_url_gets_the_site_404_page(client):
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert "There is nothing at" in response.content.decode()


def test_signup_creates_the_account_and_signs_in(client):
    response = client.post("/accounts/signup/", {"username": "ada", "password1": "analytical-engine-1843", "password2": "analytical-engine-1843"})
    assert response.status_code == 302
    assert User.objects.filter(username="ada").exists()
    assert "ada" in client.get("/").content.decode()


def test_signup_with_mismatched_passwords_says_why_and_creates_nothing(client):
    response = client.post("/accounts/signup/", {"username": "bob", "password1": "analytical-engine-1843", "password2": "different-1843"})
    assert response.status_code == 400
    assert "didn’t match" in response.content.decode() or "didn't match" in response.content.decode()
    assert not User.objects.filter(username="bob").exists()


def test_sign_in_and_sign_out(client):
    User.objects.create_user("cy", password="s3cret-pass-word")
    response = client.post("/accounts/login/", {"username": "cy", "password": "s3cret-pass-word"})
    assert response.status_code == 302
    assert "Sign out" in client.get("/").content.decode()
    client.post("/accounts/logout/")
    assert "Sign in" in client.get("/").content.decode()


def test_wrong_password_is_refused_with_a_message(client):
    User.objects.create_user("cy", password="s3cret-pass-word")
    response = client.post("/accounts/login/", {"username": "cy", "password": "nope"})
    assert response.status_code == 200
    assert "enter a correct username and password" in response.content.decode()


def test_staff_see_the_admin_link(client):
    admin = User.objects.create_superuser("root", password="pw-root-123456")
    client.force_login(admin)
    assert reverse("admin:index") in client.get("/").content.decode()


def test_system_page_lists_recorded_workers_and_service_health(client, redis_clean):
    worker_record_heartbeat(status=_status("train@box", queues=["train"], age=0.5))
    worker_record_heartbeat(status=_status("old@box", queues=["infer"], age=60))
    html = client.get("/system/").content.decode()
    assert 'data-worker="train@box" data-state="live"' in html
    assert 'data-worker="old@box" data-state="gone"' in html
    assert "<strong>Redis</strong> Redis" in html
    assert "<strong>Database</strong> SQLite" in html or "PostgreSQL" in html


def test_system_page_says_how_to_start_a_worker_when_none_reported(client, redis_clean):
    assert "No worker has reported in" in client.get("/system/").content.decode()


def _status(name, *, queues, age):
    return {
        "name": name, "host": "box", "pid": 1, "queues": queues, "pool": "solo", "concurrency": 1, "python": "3.11",
        "started": time.time() - 100, "ts": time.time() - age, "tasks": [],
        "device": {"kind": "cpu", "name": "Test CPU", "cores": 2, "memory_bytes": 2**30, "torch": "2.13.0", "cpu": "Test CPU", "count": 1},
    }
