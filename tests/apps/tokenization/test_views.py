"""The tokenization pages: playground (page, htmx fragments, URL state), decoding, the library and training form,
a tokenizer's page, the merge explorer and the vocabulary browser."""

import re

import pytest
from django.test import override_settings

from apps.system.models import JobStatus
from apps.tokenization.models import Tokenizer
from apps.tokenization.state import compress_text
from tests.data_fixtures import artifact_files
from workers.gpt import tokenizers as toklib

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]


def tokenize(client, **fields):
    data = {"text": "", "t": ["gpt2"]} | fields
    return client.post("/tokenizers/tokenize/", data, HTTP_HX_REQUEST="true")


def counts(html: str) -> list[int]:
    return [int(n.replace(",", "")) for n in re.findall(r'class="n-tokens">([\d,]+)<', html)]


def test_the_playground_opens_with_a_comparison_and_the_explanation(client, builtins):
    html = client.get("/tokenizers/").content.decode()
    assert "Tokenizer playground" in html and "Why tokenization matters" in html
    assert len(counts(html)) == 2  # gpt2 and o200k_base side by side
    assert 'aria-current="page"' in html and ">Tokenizers</a>" in html
    assert "It is read as <strong>plain text</strong>" in html  # the sample contains <|endoftext|>


def test_typing_posts_the_form_and_gets_the_panes(client, builtins):
    text = "Hello world 你好"
    response = tokenize(client, text=text, t=["gpt2", "o200k_base"])
    html = response.content.decode()
    assert response.status_code == 200
    assert counts(html) == [len(toklib.get_builtin(n).encode(text)) for n in ("gpt2", "o200k_base")]
    assert 'id="why" hx-swap-oob="true"' in html  # the explanation follows the text
    assert 'data-ids="19526 254"' in html  # 你 is two gpt2 tokens, one segment
    assert ">fewest<" in html and "×" in html


def test_a_pane_can_be_added_and_removed(client, builtins):
    html = tokenize(client, text="abc", t=["gpt2", "cl100k_base", "o200k_base"]).content.decode()
    assert len(counts(html)) == 3
    html = tokenize(client, text="abc", t=["gpt2", "cl100k_base", "o200k_base"], drop="1").content.decode()
    assert len(counts(html)) == 2 and 'value="cl100k_base" selected' not in html


def test_special_tokens_toggle_changes_the_ids_and_says_so(client, builtins):
    plain = tokenize(client, text="a<|endoftext|>b").content.decode()
    assert "It is read as <strong>plain text</strong>" in plain and counts(plain) == [len(toklib.get_builtin("gpt2").encode("a<|endoftext|>b"))]
    special = tokenize(client, text="a<|endoftext|>b", special="1").content.decode()
    assert "one special token" in special and counts(special) == [3]
    assert 'class="tk c1 special"' in special


def test_show_whitespace(client, builtins):
    html = tokenize(client, text="a b", ws="1").content.decode()
    assert ">·b<" in html


def test_an_unknown_tokenizer_is_an_error_in_its_pane_only(client, builtins):
    html = tokenize(client, text="hi", t=["gpt2", "gpt5"]).content.decode()
    assert counts(html) == [1]
    assert "unknown tokenizer &#x27;gpt5&#x27;: choose one of gpt2" in html


@override_settings(TOKENIZE_MAX_BYTES=1000)
def test_text_over_the_limit_is_413_with_a_message(client, builtins):
    response = tokenize(client, text="x" * 1001)
    assert response.status_code == 413
    assert "The text is 1,001 bytes; the playground and the API take at most 1,000 bytes" in response.content.decode()


def test_long_text_renders_the_first_screens_and_loads_the_rest_lazily(client, builtins):
    text = "word " * 20_000
    html = tokenize(client, text=text).content.decode()
    assert counts(html) == [len(toklib.get_builtin("gpt2").encode(text))]
    assert html.count('class="tk ') == 1500 and "loading more tokens" in html
    more = client.post("/tokenizers/more/", {"text": text, "t": ["gpt2"], "pane": "0", "start": "1500", "seg": "1500"},
                       HTTP_HX_REQUEST="true").content.decode()
    assert 'data-i="1500"' in more and more.count('class="tk ') == 4000
    assert 'hx-swap-oob="beforeend:#ids-0"' in more and '"start": 5500' in more


@pytest.mark.parametrize("fields", [{"pane": "3", "start": "0", "seg": "0"}, {"pane": "0", "start": "x", "seg": "0"},
                                    {"pane": "0", "start": "999999", "seg": "0"}])
def test_a_bad_window_request_is_a_400(client, builtins, fields):
    response = client.post("/tokenizers/more/", {"text": "abc", "t": ["gpt2"]} | fields, HTTP_HX_REQUEST="true")
    assert response.status_code == 400


def test_the_state_comes_from_the_url_plain_or_compressed(client, builtins):
    html = client.get("/tokenizers/", {"t": ["cl100k_base"], "text": "plain text here", "ws": "1"}).content.decode()
    assert counts(html) == [3] and "plain text here</textarea>" in html and 'name="ws" value="1" class="retokenize" checked' in html
    long_text = "Compressed text in the link. " * 50
    html = client.get("/tokenizers/", {"t": "o200k_base", "z": compress_text(long_text)}).content.decode()
    assert counts(html) == [len(toklib.get_builtin("o200k_base").encode(long_text))]


def test_a_damaged_link_says_so(client, builtins):
    response = client.get("/tokenizers/", {"t": "gpt2", "z": "not-deflate!!"})
    assert response.status_code == 400 and "The text in this link is damaged" in response.content.decode()


@override_settings(TOKENIZE_MAX_BYTES=1000)
def test_a_link_that_inflates_past_the_limit_is_refused(client, builtins):
    response = client.get("/tokenizers/", {"t": "gpt2", "z": compress_text("a" * 100_000)})
    assert response.status_code == 413 and "over the playground" in response.content.decode()


@override_settings(TOKENIZE_ANON_PER_MINUTE=2)
def test_anonymous_typing_is_rate_limited(client, builtins, monkeypatch):
    monkeypatch.setattr("apps.system.limits._now", lambda: 1_000_000_020.0)  # mid-window: no rollover
    assert tokenize(client, text="a").status_code == 200
    assert tokenize(client, text="ab").status_code == 200
    limited = tokenize(client, text="abc")
    assert limited.status_code == 429 and "Too many requests" in limited.content.decode()


def test_decode_shows_the_text_and_flags_cut_characters(client, builtins):
    html = client.post("/tokenizers/decode/", {"ids": "[15496, 995]", "dt": "gpt2"}).content.decode()
    assert "Hello world" in html
    cut = client.post("/tokenizers/decode/", {"ids": "19526", "dt": "gpt2"}).content.decode()
    assert "not valid UTF-8" in cut and "&lt;e4 bd&gt;" in cut


@pytest.mark.parametrize("fields, message", [
    ({"ids": "1 99999999", "dt": "gpt2"}, "id 99999999 (item 2) is out of range"),
    ({"ids": "hello", "dt": "gpt2"}, "item 1 (&#x27;hello&#x27;) is not a whole number"),
    ({"ids": "", "dt": "gpt2"}, "Type or paste some token ids"),
    ({"ids": "1", "dt": "nope"}, "unknown tokenizer"),
])
def test_decode_errors_are_400_with_the_reason(client, builtins, fields, message):
    response = client.post("/tokenizers/decode/", fields)
    assert response.status_code == 400 and message in response.content.decode()


def test_the_library_lists_tokenizers_in_order_and_offers_training(client, builtins, user):
    html = client.get("/tokenizers/library/").content.decode()
    names = re.findall(r'data-tokenizer="([^"]+)"', html)
    assert names == ["gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base"]
    assert "Sign in</a> to train" in html
    client.force_login(user)
    assert 'action="/tokenizers/train/"' in client.get("/tokenizers/library/").content.decode()


def test_training_from_the_form_queues_a_job(client, tiny_corpus, no_enqueue, django_capture_on_commit_callbacks):
    client.force_login(tiny_corpus.owner)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/tokenizers/train/", {"name": "tiny-512", "corpus": tiny_corpus.id, "vocab_size": "300",
                                                      "pattern": "gpt2", "special_tokens": "<|endoftext|> <|pad|>"})
    row = Tokenizer.objects.get(name="tiny-512")
    assert response.status_code == 302 and response["Location"] == "/tokenizers/tiny-512/"
    assert (row.status, row.kind, row.vocab_size, row.pattern) == (JobStatus.QUEUED, "bpe", 300, "gpt2")
    assert row.special_tokens == ["<|endoftext|>", "<|pad|>"] and row.owner == tiny_corpus.owner
    assert no_enqueue == [("tokenizer_train", (row.id,))]
    page = client.get("/tokenizers/tiny-512/").content.decode()
    assert f'ws-connect="/ws/tokenization/tokenizer/{row.id}/"' in page and "Cancel training" in page


@pytest.mark.parametrize("fields, message", [
    ({"vocab_size": "200"}, "between 257 (256 bytes + 1 special token(s)) and 65,536"),
    ({"vocab_size": "70000"}, "between 257"),
    ({"vocab_size": "60000"}, "supports at most"),
    ({"name": "gpt2"}, "A tokenizer called &#x27;gpt2&#x27; exists already"),
    ({"name": "library"}, "reserved"),
    ({"name": "Bad Name!"}, "lowercase letters, digits"),
    ({"special_tokens": "<|pad|>"}, "must include &lt;|endoftext|&gt;"),
    ({"pattern": "gpt5"}, "Select a valid choice"),
])
def test_impossible_training_requests_are_refused_with_the_reason(client, tiny_corpus, builtins, no_enqueue, fields,
                                                                  message):
    client.force_login(tiny_corpus.owner)
    data = {"name": "ok-name", "corpus": tiny_corpus.id, "vocab_size": "300", "pattern": "gpt4",
            "special_tokens": "<|endoftext|>"} | fields
    response = client.post("/tokenizers/train/", data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Tokenizer.objects.filter(kind="bpe").exists() and no_enqueue == []


def test_training_needs_an_account(client, tiny_corpus):
    response = client.post("/tokenizers/train/", {"name": "x1"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_a_character_tokenizer_is_built_at_once(client, tiny_corpus):
    client.force_login(tiny_corpus.owner)
    response = client.post("/tokenizers/char/", {"name": "tiny-char", "corpus": tiny_corpus.id})
    assert response.status_code == 302
    row = Tokenizer.objects.get(name="tiny-char")
    assert row.status == JobStatus.SUCCEEDED and row.n_vocab == tiny_corpus.stats["distinct_chars"]
    page = client.get("/tokenizers/tiny-char/merges/").content.decode()
    assert "has no merges" in page


def test_a_tokenizer_page_and_its_first_merges(client, tiny_bpe):
    client.force_login(tiny_bpe.owner)
    html = client.get("/tokenizers/tiny-bpe/").content.decode()
    assert "The first merges" in html and "Pair count" in html and "<polyline" in html
    assert "Delete this tokenizer" in html
    assert client.get("/tokenizers/tiny-bpe/").status_code == 200
    client.logout()
    assert client.get("/tokenizers/tiny-bpe/").status_code == 404  # someone else's
    assert client.get("/tokenizers/no-such/").status_code == 404


def test_the_merge_explorer_steps_through_merges(client, builtins):
    html = client.get("/tokenizers/gpt2/merges/", {"n": "0", "text": "hello there"}).content.decode()
    assert "No merges yet" in html and counts(html) == [len("hello there")]
    step = client.get("/tokenizers/gpt2/merges/", {"n": "50000", "text": "hello there"},
                      HTTP_HX_REQUEST="true").content.decode()
    assert step.startswith('<section id="merge-step"') and counts(step) == [2]
    assert "Merge 50,000:" in step
    clamped = client.get("/tokenizers/gpt2/merges/", {"n": "99999999", "text": "hi"}).content.decode()
    assert 'data-n="50000"' in clamped


def test_the_merge_explorer_shows_pair_counts_for_trained_tokenizers(client, tiny_bpe):
    client.force_login(tiny_bpe.owner)
    html = client.get("/tokenizers/tiny-bpe/merges/", {"n": "1"}).content.decode()
    assert "the pair occurred" in html and "First Citizen" in html  # the sample is the training text


def test_the_merge_explorer_refuses_a_long_sample(client, builtins):
    response = client.get("/tokenizers/gpt2/merges/", {"n": "5", "text": "x" * 6000})
    assert response.status_code == 413 and "at most 5,000" in response.content.decode()


def test_the_vocabulary_browser_searches(client, builtins):
    html = client.get("/tokenizers/gpt2/vocab/", {"q": "#50256"}).content.decode()
    assert 'data-id="50256"' in html and "special" in html
    rows = client.get("/tokenizers/gpt2/vocab/", {"q": "", "partial": "1"}, HTTP_HX_REQUEST="true").content.decode()
    assert rows.startswith('<section id="vocab-rows"') and "not UTF-8 alone" in rows


def test_only_the_owner_deletes_a_tokenizer_and_its_files_go(client, tiny_bpe, other_user):
    path = tiny_bpe.path
    assert artifact_files(path)
    client.force_login(other_user)
    assert client.post("/tokenizers/tiny-bpe/delete/").status_code == 404
    client.force_login(tiny_bpe.owner)
    assert client.post("/tokenizers/tiny-bpe/delete/").status_code == 302
    assert not Tokenizer.objects.filter(name="tiny-bpe").exists() and artifact_files(path) == []


def test_built_in_tokenizers_cannot_be_deleted(client, builtins, staff):
    client.force_login(staff)
    client.post("/tokenizers/gpt2/delete/")
    assert Tokenizer.objects.filter(name="gpt2").exists()


def test_a_tokenizer_whose_files_are_gone_says_so_instead_of_failing(client, tiny_bpe):
    from apps.system import files

    files.remove(files.artifact_path(tiny_bpe.path))
    tiny_bpe.fingerprint = "changed"  # a fresh cache key: the loaded tokenizer is cached per process
    tiny_bpe.save()
    client.force_login(tiny_bpe.owner)
    response = client.get("/tokenizers/tiny-bpe/merges/", follow=True)
    assert response.status_code == 200 and "cannot be loaded" in response.content.decode()
    api = client.post("/api/tokenize", {"text": "a", "tokenizer": "tiny-bpe"}, content_type="application/json")
    assert api.status_code == 409 and "is missing" in api.json()["error"]
    html = tokenize(client, text="a", t=["tiny-bpe"]).content.decode()
    assert "cannot be loaded" in html


def test_get_on_the_train_address_shows_the_library_form_instead_of_a_405(client, user):
    client.force_login(user)
    response = client.get("/tokenizers/train/", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [("/tokenizers/library/#train", 302)]
    assert 'action="/tokenizers/train/"' in response.content.decode()
