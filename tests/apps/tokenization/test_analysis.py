"""What the playground, merge explorer, vocabulary browser and API compute, checked against tiktoken itself."""

import json

import pytest

from apps.tokenization import merges, playground, vocabulary
from apps.tokenization.fingerprint import fingerprint
from workers.gpt import tokenizers as toklib

GPT2 = toklib.get_builtin("gpt2")
CL100K = toklib.get_builtin("cl100k_base")
O200K = toklib.get_builtin("o200k_base")


def test_segments_group_a_chinese_character_split_over_tokens():
    ids = playground.encode(GPT2, "你好 ok")
    window = playground.segments_window(GPT2, ids, 0, 0, 100, show_ws=False)
    first = window["segments"][0]
    assert first["display"] == "你" and first["multi"] and len(first["ids"]) == 2
    assert first["id_bytes"] == [(19526, "e4 bd"), (254, "a0")]
    assert "2 tokens" in first["title"]
    assert "".join(s["display"] + s["nl"] for s in window["segments"]) == "你好 ok"
    assert window["next"] is None


def test_ids_cut_mid_character_are_shown_as_their_bytes():
    window = playground.segments_window(GPT2, [19526], 0, 0, 100, show_ws=False)
    (seg,) = window["segments"]
    assert seg["partial"] and seg["display"] == "<e4 bd>"


def test_windows_continue_where_the_last_stopped_and_never_cut_a_character():
    text = "東京 tokyo " * 300
    ids = playground.encode(GPT2, text)
    windows, start, seg = [], 0, 0
    while start is not None:
        w = playground.segments_window(GPT2, ids, start, seg, 7, show_ws=False)
        windows.append(w)
        start, seg = w["next"], w["next_seg"]
    segments = [s for w in windows for s in w["segments"]]
    assert [s["i"] for s in segments] == list(range(len(segments)))
    assert "".join(s["display"] + s["nl"] for s in segments) == text
    assert not any(s.get("partial") for s in segments)


def test_whitespace_can_be_made_visible():
    window = playground.segments_window(GPT2, GPT2.encode("a b\n\tc"), 0, 0, 100, show_ws=True)
    assert "".join(s["display"] + s["nl"] for s in window["segments"]) == "a·b↵\n→c"
    newline = next(s for s in window["segments"] if s["nl"])
    assert newline["display"].endswith("↵") and newline["nl"] == "\n"  # the line breaks after the token's span


def test_stats_and_special_strings():
    stats = playground.pane_stats("héllo", 2)
    assert stats == {"tokens": 2, "chars": 5, "bytes": 6, "chars_per_token": 2.5, "bytes_per_token": 3.0}
    found = playground.find_special_strings(GPT2, "a <|endoftext|> b <|endoftext|>")
    assert found == [{"text": "<|endoftext|>", "id": 50256, "count": 2,
                      "as_text_ids": GPT2.encode("<|endoftext|>", allow_special=False)}]


def test_insights_quote_numbers_from_the_text():
    text = "Tokenization of 你好 costs 1234567 tokens"
    panes = [{"name": t.name, "tok": t, "ids": playground.encode(t, text),
              "stats": playground.pane_stats(text, len(playground.encode(t, text)))} for t in (GPT2, O200K)]
    facts = {f["kind"]: f for f in playground.insights(text, panes)}
    assert facts["sees"]["tokens"] == len(GPT2.encode(text)) and facts["sees"]["chars"] == len(text)
    assert facts["compare"]["worst"] == "gpt2" and facts["compare"]["best"] == "o200k_base"
    assert facts["compare"]["ratio"] == len(GPT2.encode(text)) / len(O200K.encode(text))
    assert facts["multi"]["name"] == "gpt2" and facts["multi"]["example"] in "你好"
    assert facts["word"]["word"] == "Tokenization" and "".join(facts["word"]["pieces"]) == "Tokenization"
    assert facts["number"]["number"] == "1234567" and "".join(facts["number"]["pieces"]) == "1234567"


def test_api_token_json_is_each_token_with_its_text_and_bytes():
    ids = GPT2.encode("hi 你")
    tokens = json.loads(b"[" + playground.tokens_json(GPT2, ids) + b"]")
    assert [t["id"] for t in tokens] == ids
    assert [bytes(t["bytes"]) for t in tokens] == [GPT2.token_bytes(i) for i in ids]
    assert tokens[0]["text"] == "hi" and tokens[-1]["text"] == "\ufffd"  # a piece of 你 alone is not text
    # ids never seen before by the cache are filled in, seen ones reused
    assert json.loads(b"[" + playground.tokens_json(GPT2, [50256, 0]) + b"]")[0]["text"] == "<|endoftext|>"


@pytest.mark.parametrize("raw, ids", [("[15496, 995]", [15496, 995]), ("15496 995", [15496, 995]),
                                      ("15496,995\n7", [15496, 995, 7]), ("", [])])
def test_parse_ids_accepts_the_usual_ways_of_writing_them(raw, ids):
    assert playground.parse_ids(raw) == ids


@pytest.mark.parametrize("raw, message", [("12 abc", "item 2 ('abc') is not a whole number"),
                                          ("1 -5", "item 2 (-5) is negative")])
def test_parse_ids_names_the_bad_item(raw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        playground.parse_ids(raw)


def test_decode_refuses_ids_out_of_range_or_unused():
    with pytest.raises(toklib.TokenizerError, match=r"id 50257 \(item 2\) is out of range: gpt2 has ids 0..50256"):
        playground.decode(GPT2, [1, 50257])
    with pytest.raises(toklib.TokenizerError, match="id 100256 is not a token of cl100k_base"):
        playground.decode(CL100K, [100256])
    assert playground.decode(GPT2, [15496, 995]) == {"text": "Hello world", "bytes": 11, "valid_utf8": True}
    assert playground.decode(GPT2, [19526])["valid_utf8"] is False


def test_merge_steps_go_from_bytes_to_the_full_encoding():
    text = "the quick brown fox"
    zero = merges.merge_step(GPT2, text, 0)
    assert zero["tokens"] == len(text.encode()) and zero["merge"] is None
    full = merges.merge_step(GPT2, text, GPT2.n_merges)
    assert full["tokens"] == len(GPT2.encode(text))
    first = merges.merge_step(GPT2, "a tree at the top", 1)
    assert first["merge"]["left_text"] == "·" and first["merge"]["right_text"] == "t"  # merge 1 makes " t"
    assert first["fused"] == 3 and first["tokens"] == len("a tree at the top") - 3  # " tree", " the", " top"
    info = merges.merge_info(GPT2, 1)
    assert info["rank"] == 256 and info["count"] is None


def test_a_trained_bpe_shows_its_pair_counts():
    tok = toklib.train_bpe("ab ab ab abc abc", 260, "gpt4")
    info = merges.merge_info(tok, 1)
    assert (info["left_text"], info["right_text"], info["count"]) == ("a", "b", 5)
    curve = merges.merge_count_curve(tok, marker_n=2)
    assert curve["n"] == tok.n_merges and curve["max"] == 5 and curve["marker"] is not None
    assert merges.merge_count_curve(GPT2) is None


def test_vocabulary_search_by_text_id_bytes_and_partial():
    by_text = vocabulary.vocab_search(GPT2, "ization")
    assert by_text["total"] > 5 and all("ization" in r["text"] for r in by_text["rows"])
    by_id = vocabulary.vocab_search(GPT2, "#50256")
    assert by_id["total"] == 1 and by_id["rows"][0]["special"] and by_id["rows"][0]["text"] == "<|endoftext|>"
    by_hex = vocabulary.vocab_search(GPT2, "0xe4bd")
    assert by_hex["rows"] and all("e4 bd" in r["hex"] for r in by_hex["rows"])
    partial = vocabulary.vocab_search(GPT2, "", partial_only=True)
    assert partial["total"] > 0 and not any(r["utf8"] for r in partial["rows"]) and partial["rows"][0]["text"] is None
    assert vocabulary.vocab_search(GPT2, "", page=10_000)["page"] == vocabulary.vocab_search(GPT2, "")["pages"]


def test_fingerprints_differ_between_tokenizers_and_are_stable():
    assert fingerprint(GPT2) == fingerprint(GPT2)
    assert len({fingerprint(t) for t in (GPT2, CL100K, toklib.CharTokenizer.from_text("ab"))}) == 3


@pytest.mark.parametrize("allow_special", [False, True])
def test_long_text_encoded_on_two_threads_gives_exactly_the_same_ids(allow_special, monkeypatch):
    monkeypatch.setattr(playground, "ENCODE_THREADS", 2)  # whatever this machine's core count
    text = open("data/corpora/shakespeare.txt", encoding="utf-8").read()[:150_000] + "\n<|endoftext|>\nThe end"
    for tok in (GPT2, CL100K, O200K):
        assert playground.encode_fast(tok, text, allow_special) == tok.encode(text, allow_special)
    assert len(text) > playground.PARALLEL_MIN_CHARS
