"""The corpora pages: list, upload (every bad input gets its message and a 4xx, and leaves no file), a corpus's
page, the split and encoding forms."""

import io

import pytest
from django.test import override_settings

from apps.corpora.models import Corpus, Shards
from apps.system.models import JobStatus
from tests.data_fixtures import artifact_files

pytestmark = pytest.mark.django_db


def _upload(client, *, files=(), **fields):
    data = {"name": "My corpus", "description": "", "text": ""} | fields
    for f in files:
        f.seek(0)
    data["files"] = list(files)
    return client.post("/data/upload/", data)


def _file(name: str, content: bytes):
    f = io.BytesIO(content)
    f.name = name
    return f


def test_the_list_shows_the_bundled_corpora_to_everyone(client, bundled):
    html = client.get("/data/").content.decode()
    assert "Shakespeare" in html and "Song ci" in html
    assert 'aria-current="page"' in html and ">Data</a>" in html


def test_a_corpus_page_shows_its_statistics_split_and_preview(client, bundled):
    corpus = bundled["Shakespeare"]
    html = client.get(f"/data/{corpus.id}/").content.decode()
    assert "1,319,312 bytes" in html and "63" in html  # size, distinct characters
    assert "Most frequent words" in html and ">the<" in html
    assert "10.0 %" in html  # validation share
    assert "BERNARDO:" in html  # the preview
    assert "Sign in</a> to encode" in html
    zh = client.get(f"/data/{bundled['Song ci'].id}/").content.decode()
    assert "Most frequent character pairs" in zh


def test_the_preview_pages_through_the_text(client, bundled):
    corpus = bundled["Shakespeare"]
    first = client.get(f"/data/{corpus.id}/preview/").content.decode()
    assert "Show more" in first
    later = client.get(f"/data/{corpus.id}/preview/?offset=1319000").content.decode()
    assert "Show more" not in later


def test_someone_elses_upload_is_not_found(client, tiny_corpus, other_user):
    client.force_login(other_user)
    assert client.get(f"/data/{tiny_corpus.id}/").status_code == 404
    client.logout()
    assert client.get(f"/data/{tiny_corpus.id}/").status_code == 404


def test_uploading_needs_an_account(client):
    response = client.get("/data/upload/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_an_upload_of_several_files_becomes_one_corpus(client, user):
    client.force_login(user)
    response = _upload(client, name="Sonnets", files=[_file("one.txt", b"Shall I compare thee\n"),
                                                      _file("two.txt", "to a summer’s day?".encode())])
    corpus = Corpus.objects.get(name="Sonnets")
    assert response.status_code == 302 and response["Location"] == f"/data/{corpus.id}/"
    assert corpus.file.read_text() == "Shall I compare thee\n\nto a summer’s day?\n"
    assert corpus.owner == user


def test_pasted_text_becomes_a_corpus(client, user):
    client.force_login(user)
    response = _upload(client, name="Pasted", text="To be, or not to be,\nthat is the question.\n")
    assert response.status_code == 302
    assert Corpus.objects.get(name="Pasted").n_lines == 2


@pytest.mark.parametrize("files, fields, status, message", [
    ([_file("bad.txt", b"fine\nna\xefve\n")], {}, 400, "bad.txt is not valid UTF-8: byte 7 (line 2, column 3)"),
    ([_file("blank.txt", b"\n\n   \n")], {}, 400, "The corpus is empty"),
    ([], {}, 400, "The corpus is empty: choose .txt files or paste some text."),
    ([_file("data.csv", b"a,b\n")], {}, 400, "data.csv is not a .txt file"),
    ([_file("big.txt", b"x" * 3000)], {}, 413, "over the limit of 2.0 KB"),
    ([_file("ok.txt", b"text\n")], {"name": ""}, 400, "This field is required."),
])
@override_settings(CORPUS_MAX_BYTES=2048)
def test_bad_uploads_get_a_clear_message_and_leave_nothing_behind(client, user, files, fields, status, message):
    client.force_login(user)
    before = artifact_files("corpora")
    response = _upload(client, files=files, **fields)
    assert response.status_code == status
    assert message in response.content.decode()
    assert artifact_files("corpora") == before
    assert not Corpus.objects.exists()


@override_settings(CORPUS_MAX_BYTES=2048)
def test_a_huge_upload_is_refused_before_its_body_is_read(client, user):
    client.force_login(user)
    response = client.post("/data/upload/", data=b"x", content_type="multipart/form-data; boundary=x",
                           CONTENT_LENGTH=str(50 * 1024 * 1024))
    assert response.status_code == 413
    assert "over the limit of 0.0 MB" in response.content.decode() or "over the limit" in response.content.decode()


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1000)
def test_pasted_text_over_the_form_limit_says_to_upload_a_file(client, user):
    client.force_login(user)
    response = _upload(client, text="y" * 5000)
    assert response.status_code == 413
    assert "save it as a .txt file and upload the file instead" in response.content.decode()
    assert not Corpus.objects.exists()


def test_the_owner_changes_the_split_with_htmx(client, tiny_corpus):
    client.force_login(tiny_corpus.owner)
    response = client.post(f"/data/{tiny_corpus.id}/split/", {"val_percent": "20"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert 'id="split"' in response.content.decode() and "20.0 %" in response.content.decode()
    tiny_corpus.refresh_from_db()
    assert tiny_corpus.val_fraction == 0.2


@pytest.mark.parametrize("value, status", [("0", 400), ("75", 400), ("abc", 400)])
def test_an_impossible_split_is_refused(client, tiny_corpus, value, status):
    client.force_login(tiny_corpus.owner)
    response = client.post(f"/data/{tiny_corpus.id}/split/", {"val_percent": value}, HTTP_HX_REQUEST="true")
    assert response.status_code == status
    tiny_corpus.refresh_from_db()
    assert tiny_corpus.val_fraction == 0.1


def test_only_staff_may_change_a_bundled_corpus_split(client, bundled, user):
    client.force_login(user)
    response = client.post(f"/data/{bundled['Shakespeare'].id}/split/", {"val_percent": "20"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 403
    assert "Only the corpus&#x27;s owner (or staff) may change its split" in response.content.decode()


def test_encoding_queues_a_job_and_the_row_appears(client, tiny_corpus, builtins, no_enqueue,
                                                   django_capture_on_commit_callbacks):
    client.force_login(tiny_corpus.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/data/{tiny_corpus.id}/encode/", {"tokenizer": builtins["cl100k_base"].id},
                               HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    shards = Shards.objects.get()
    assert f'id="shards-{shards.id}"' in response.content.decode() and "queued" in response.content.decode()
    assert no_enqueue == [("corpus_encode", (shards.id,))]


def test_encoding_an_encoded_pair_says_it_is_reused(client, tiny_corpus, builtins, no_enqueue):
    from workers.corpora import corpus_encode

    client.force_login(tiny_corpus.owner)
    client.post(f"/data/{tiny_corpus.id}/encode/", {"tokenizer": builtins["gpt2"].id}, HTTP_HX_REQUEST="true")
    corpus_encode(shards_id=Shards.objects.get().id)
    response = client.post(f"/data/{tiny_corpus.id}/encode/", {"tokenizer": builtins["gpt2"].id},
                           HTTP_HX_REQUEST="true")
    html = response.content.decode()
    assert "Already encoded with gpt2" in html and "uint16" in html
    assert Shards.objects.count() == 1


def test_encoding_with_an_unknown_tokenizer_is_a_400(client, tiny_corpus):
    client.force_login(tiny_corpus.owner)
    response = client.post(f"/data/{tiny_corpus.id}/encode/", {"tokenizer": "999"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "Choose a tokenizer that has finished training." in response.content.decode()


def test_cancel_from_the_page(client, tiny_corpus, builtins, no_enqueue):
    client.force_login(tiny_corpus.owner)
    client.post(f"/data/{tiny_corpus.id}/encode/", {"tokenizer": builtins["gpt2"].id})
    shards = Shards.objects.get()
    response = client.post(f"/data/shards/{shards.id}/cancel/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    shards.refresh_from_db()
    assert shards.status == JobStatus.CANCELLED


def test_the_owner_deletes_an_upload_with_its_file(client, tiny_corpus, other_user):
    path = tiny_corpus.file
    client.force_login(other_user)
    assert client.post(f"/data/{tiny_corpus.id}/delete/").status_code == 404
    client.force_login(tiny_corpus.owner)
    response = client.post(f"/data/{tiny_corpus.id}/delete/")
    assert response.status_code == 302
    assert not Corpus.objects.filter(id=tiny_corpus.id).exists() and not path.exists()


def test_a_corpus_whose_file_is_gone_says_so_instead_of_failing(client, tiny_corpus):
    tiny_corpus.file.unlink()
    client.force_login(tiny_corpus.owner)
    response = client.get(f"/data/{tiny_corpus.id}/")
    assert response.status_code == 200 and "The text file of this corpus is missing" in response.content.decode()
