"""Conversation sets on the Data page: upload (validated line by line, nothing half-saved, size limit), the bundled
sets, their statistics, the listing by kind, and the loss-mask preview through a model's chat template."""

import json

import pytest
from django.urls import reverse

from apps.corpora import conversations
from apps.corpora.models import Corpus
from apps.corpora.text import CorpusInputError
from apps.registry.models import Model

GOOD = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}] * 5


def jsonl(objs) -> bytes:
    return "".join(json.dumps(o) + "\n" for o in objs).encode()


def test_an_upload_is_split_at_conversation_granularity(user):
    corpus = conversations.conversations_create(name="five", owner=user, data=jsonl(GOOD), val_fraction=0.2)
    assert corpus.kind == Corpus.Kind.CONVERSATIONS and corpus.file.exists()
    assert {k: corpus.stats[k] for k in ("n_conversations", "n_train", "n_val", "n_turns")} == \
        {"n_conversations": 5, "n_train": 4, "n_val": 1, "n_turns": 5}
    train, val = conversations.conversations_load(corpus=corpus)
    assert (len(train), len(val)) == (4, 1)


def test_every_bad_line_is_named_and_nothing_is_saved(user):
    lines = jsonl(GOOD[:1]) + b"{not json\n" + jsonl([{"messages": [{"role": "user", "content": "no answer"}]}])
    with pytest.raises(CorpusInputError) as exc:
        conversations.conversations_create(name="bad", owner=user, data=lines)
    assert "2 bad line(s)" in str(exc.value)
    assert exc.value.lines[0].startswith("line 2: not valid JSON")
    assert exc.value.lines[1].startswith("line 3: no assistant message")
    assert not Corpus.objects.filter(name="bad").exists()


def test_a_file_over_the_limit_is_refused_with_413(user, settings):
    settings.CORPUS_MAX_BYTES = 100
    with pytest.raises(CorpusInputError) as exc:
        conversations.conversations_create(name="big", owner=user, data=jsonl(GOOD))
    assert exc.value.status == 413 and not Corpus.objects.exists()


def test_the_bundled_sets_are_seeded_once_with_their_split(db):
    first = conversations.conversations_seed_defaults()
    again = conversations.conversations_seed_defaults()
    assert [c.pk for c in first] == [c.pk for c in again]
    char = next(c for c in first if "char" in c.name)
    assert (char.stats["n_train"], char.stats["n_val"]) == (3000, 300)


def test_the_upload_page_lists_each_bad_line_and_answers_400(client, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    bad = SimpleUploadedFile("chats.jsonl", jsonl(GOOD) + b'{"messages": []}\n')
    response = client.post(reverse("corpora:upload_conversations"), {"name": "x", "file": bad, "val_percent": 10})
    assert response.status_code == 400
    assert b"line 6: &quot;messages&quot; is empty" in response.content
    assert not Corpus.objects.exists()


def test_the_upload_page_saves_a_good_file(client, user):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(user)
    response = client.post(reverse("corpora:upload_conversations"),
                           {"name": "chats", "file": SimpleUploadedFile("c.jsonl", jsonl(GOOD)), "val_percent": 20})
    corpus = Corpus.objects.get(name="chats")
    assert response.status_code == 302 and response["Location"] == reverse("corpora:detail", args=[corpus.pk])


def test_the_data_page_lists_data_sets_by_kind(client, user, tiny_corpus):
    conversations.conversations_create(name="chats", owner=user, data=jsonl(GOOD))
    client.force_login(user)
    page = client.get(reverse("corpora:list")).content.decode()
    assert page.index('id="kind-text"') < page.index('data-corpus="Tiny"') < page.index('id="kind-conversations"')
    assert page.index('id="kind-conversations"') < page.index('data-corpus="chats"')


@pytest.fixture
def char_tok(tiny_corpus):
    from apps.tokenization import services as tokenization_services

    return tokenization_services.tokenizer_char_create(corpus=tiny_corpus, name="tiny-char")


@pytest.fixture
def gpt2_model(user, builtins):
    """A registry row for a GPT-2-encoding model without a chat template (no weights needed to preview)."""
    tok = builtins["gpt2"]
    return Model.objects.create(name="g", slug="g", architecture="gpt2", config={"block_size": 64}, n_params=1,
                                tokenizer=tok, tokenizer_spec={"kind": "tiktoken", "name": "gpt2", "path": "",
                                                               "fingerprint": tok.fingerprint},
                                path="models/0/x.safetensors", size_bytes=1, sha256="0", source="run",
                                status="published", owner=user)


def test_the_preview_colours_only_the_assistant_tokens_as_trained(client, user, gpt2_model):
    corpus = conversations.conversations_create(name="chats", owner=user, data=jsonl(GOOD))
    client.force_login(user)
    response = client.get(reverse("corpora:preview", args=[corpus.pk]), {"model": "g", "index": 0},
                          HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    trained = [chunk.split(">", 1)[1].split("<", 1)[0] for chunk in html.split('data-trained="1"')[1:]]
    assert "".join(trained).replace("&lt;", "<").replace("&gt;", ">").replace("|", "|") == "Hello.<|im_end|>"
    assert "ChatML" in html and 'id="conversation-preview"' in html


def test_the_preview_says_when_a_char_tokenizer_cannot_encode_the_conversation(client, user, char_tok):
    corpus = conversations.conversations_create(name="zh", owner=user, data=jsonl(
        [{"messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "好"}]}] * 2))
    Model.objects.create(name="c", slug="c", architecture="gpt2", config={"block_size": 64}, n_params=1,
                         tokenizer=char_tok, tokenizer_spec={"kind": "char", "name": char_tok.name,
                                                             "path": char_tok.path,
                                                             "fingerprint": char_tok.fingerprint},
                         path="models/0/x.safetensors", size_bytes=1, sha256="0", source="run", owner=user)
    client.force_login(user)
    response = client.get(reverse("corpora:preview", args=[corpus.pk]), {"model": "c", "index": 0},
                          HTTP_HX_REQUEST="true")
    assert response.status_code == 400 and b"cannot render the conversation" in response.content


def test_the_conversation_page_shows_its_stats(client, user):
    corpus = conversations.conversations_create(name="chats", owner=user, data=jsonl(GOOD))
    client.force_login(user)
    page = client.get(reverse("corpora:detail", args=[corpus.pk]))
    assert page.status_code == 200 and b"The loss mask" in page.content and b"Assistant turns" in page.content
