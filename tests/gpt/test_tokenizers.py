"""Tokenizers: built-in encodings load offline and match tiktoken's own definitions; trained BPEs are exact under
tiktoken (checked against a minbpe-style reference that applies merges in rank order)."""

import gzip
import hashlib
import json
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import regex
import tiktoken
import tiktoken.load
from tiktoken_ext import openai_public

from workers.gpt import tokenizers as tk

REPO = Path(__file__).resolve().parents[2]
CORPORA = REPO / "data" / "corpora"

EMOJI = "I 🙂 tokenizers 🦜🤖👍🏽 and 🧑‍💻 too; café, naïve, Ω≈ç√∫"
CHINESE_NOTE = "春风又绿江南岸，明月何时照我还？"


@pytest.fixture(scope="module")
def shakespeare():
    return (CORPORA / "shakespeare.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def song_ci():
    return (CORPORA / "song-ci.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def samples(shakespeare, song_ci):
    return {"english": shakespeare[50_000:53_000], "chinese": song_ci[20_000:21_000], "emoji": EMOJI}


def minbpe_encode(tokenizer, text, n_merges=None):
    """Reference: split with the pattern, then in each chunk repeatedly merge the pair with the lowest merge rank,
    all its occurrences left to right (minbpe's RegexTokenizer.encode_ordinary). Knows nothing of tiktoken."""
    merges = {(m.left, m.right): m.rank for m in tokenizer.merges()[:n_merges]}
    ids = []
    for chunk in regex.findall(tokenizer.pat_str, text):
        chunk_ids = list(chunk.encode("utf-8"))
        while len(chunk_ids) >= 2:
            pairs = set(zip(chunk_ids, chunk_ids[1:]))
            pair = min(pairs, key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break
            new_id, out, i = merges[pair], [], 0
            while i < len(chunk_ids):
                if i < len(chunk_ids) - 1 and (chunk_ids[i], chunk_ids[i + 1]) == pair:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(chunk_ids[i])
                    i += 1
            chunk_ids = out
        ids.extend(chunk_ids)
    return ids


def serve_shipped_files(monkeypatch):
    """Make tiktoken's loader read our shipped files (by URL basename) instead of downloading, checking each
    expected_hash itself, as tiktoken's read_file_cached would."""
    gpt2 = tk.get_builtin("gpt2")
    files = {
        "r50k_base.tiktoken": gzip.decompress((tk.DEFAULT_DATA_DIR / "r50k_base.tiktoken.gz").read_bytes()),
        "p50k_base.tiktoken": tk.dump_ranks(tk.p50k_ranks_from_r50k(gpt2.mergeable_ranks)),
        "cl100k_base.tiktoken": gzip.decompress((tk.DEFAULT_DATA_DIR / "cl100k_base.tiktoken.gz").read_bytes()),
        "o200k_base.tiktoken": gzip.decompress((tk.DEFAULT_DATA_DIR / "o200k_base.tiktoken.gz").read_bytes()),
    }

    def fake_read_file_cached(blobpath, expected_hash=None):
        data = files[blobpath.rsplit("/", 1)[-1]]
        assert expected_hash is None or tiktoken.load.check_hash(data, expected_hash), blobpath
        return data

    monkeypatch.setattr(tiktoken.load, "read_file_cached", fake_read_file_cached)


# ---------------------------------------------------------------------------------------------------------------------
# boundaries: no torch, no Django, no network


def test_module_imports_neither_torch_nor_django():
    code = ("import sys; import workers.gpt.tokenizers; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'django')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_builtins_load_offline_without_any_network_attempt(tmp_path, monkeypatch):
    data_dir = tmp_path / "tiktoken"
    shutil.copytree(tk.DEFAULT_DATA_DIR, data_dir)  # a fresh directory: nothing cached for it yet
    attempts = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network or tiktoken download attempted: {args!r}")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_network)
    for name in tk.BUILTIN_NAMES:
        tok = tk.get_builtin(name, data_dir=data_dir)
        assert tok.decode(tok.encode("offline, always")) == "offline, always"
    assert attempts == []
    assert not (tmp_path / "empty-cache").exists()


# ---------------------------------------------------------------------------------------------------------------------
# built-in encodings


@pytest.mark.parametrize("name", ["r50k_base", "p50k_base", "cl100k_base", "o200k_base"])
def test_builtin_equals_tiktoken_definition(name, monkeypatch, samples):
    serve_shipped_files(monkeypatch)
    definition = openai_public.ENCODING_CONSTRUCTORS[name]()
    ours = tk.get_builtin(name)
    assert ours.pat_str == definition["pat_str"]
    assert ours.special_tokens == definition["special_tokens"]
    assert ours.mergeable_ranks == definition["mergeable_ranks"]
    if "explicit_n_vocab" in definition:
        assert ours.n_vocab == definition["explicit_n_vocab"]
    reference = tiktoken.Encoding(**definition)
    for text in [*samples.values(), "<|endoftext|> and    twelve          spaces\n\n\tx"]:
        assert ours.encode(text, allow_special=True) == reference.encode(text, allowed_special="all")
        assert ours.encode(text) == reference.encode(text, disallowed_special=())


def test_gpt2_is_r50k_base_under_another_name():
    gpt2, r50k = tk.get_builtin("gpt2"), tk.get_builtin("r50k_base")
    assert gpt2.name == "gpt2"
    assert gpt2.mergeable_ranks == r50k.mergeable_ranks and gpt2.special_tokens == r50k.special_tokens
    assert gpt2.pat_str == r50k.pat_str


def test_p50k_base_file_hash_matches_openai():
    ranks = tk.get_builtin("p50k_base").mergeable_ranks
    assert hashlib.sha256(tk.dump_ranks(ranks)).hexdigest() == (
        "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069")
    assert ranks[b"  "] == 50257 and ranks[b" " * 25] == 50280


@pytest.mark.parametrize("name, expected", [
    ("gpt2", [31373, 995]), ("p50k_base", [31373, 995]), ("cl100k_base", [15339, 1917]),
    ("o200k_base", [24912, 2375]),
])
def test_hello_world_has_known_ids(name, expected):
    tok = tk.get_builtin(name)
    assert tok.encode("hello world") == expected
    assert tok.decode(expected) == "hello world"


@pytest.mark.parametrize("name", tk.BUILTIN_NAMES)
def test_builtin_round_trips_english_chinese_emoji(name, samples):
    tok = tk.get_builtin(name)
    for text in samples.values():
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert tok.decode_bytes(ids) == text.encode("utf-8")
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


@pytest.mark.parametrize("name", tk.BUILTIN_NAMES)
def test_describe_knows_a_builtin_without_loading_it(name):
    info, tok = tk.describe(name), tk.get_builtin(name)
    assert info["n_vocab"] == tok.n_vocab
    assert info["n_merges"] == tok.n_merges
    assert info["pat_str"] == tok.pat_str and info["special_tokens"] == tok.special_tokens
    assert tok.describe()["n_vocab"] == tok.n_vocab


def test_corrupt_tiktoken_file_names_the_file(tmp_path):
    raw = gzip.decompress((tk.DEFAULT_DATA_DIR / "r50k_base.tiktoken.gz").read_bytes())
    corrupt = raw.replace(b" 1000\n", b" 1001\n", 1)
    assert corrupt != raw
    (tmp_path / "r50k_base.tiktoken.gz").write_bytes(gzip.compress(corrupt))
    with pytest.raises(tk.TokenizerDataError, match=r"r50k_base\.tiktoken\.gz is corrupt: sha256"):
        tk.get_builtin("gpt2", data_dir=tmp_path)


def test_missing_tiktoken_file_says_where_it_should_be(tmp_path):
    with pytest.raises(tk.TokenizerDataError, match=r"cl100k_base\.tiktoken\.gz is missing"):
        tk.get_builtin("cl100k_base", data_dir=tmp_path)


def test_unknown_builtin_lists_the_choices():
    with pytest.raises(tk.TokenizerError, match="choose one of gpt2, r50k_base"):
        tk.get_builtin("gpt5")


def test_unused_ids_are_a_clear_error():
    cl100k = tk.get_builtin("cl100k_base")
    with pytest.raises(tk.TokenizerError, match="no token with id 100261"):
        cl100k.token_bytes(100261)  # between the merges and <|fim_suffix|>: unused
    with pytest.raises(tk.TokenizerError, match="cannot decode id 100261"):
        cl100k.decode([15339, 100261])


# ---------------------------------------------------------------------------------------------------------------------
# special tokens and segments


def test_allow_special_decides_whether_endoftext_is_one_token():
    gpt2 = tk.get_builtin("gpt2")
    text = "end<|endoftext|>start"
    assert gpt2.encode(text, allow_special=True) == gpt2.encode("end") + [50256] + gpt2.encode("start")
    plain = gpt2.encode(text, allow_special=False)
    assert 50256 not in plain and len(plain) > 3
    assert gpt2.decode(plain) == text


def test_segments_group_a_multi_token_cjk_character():
    gpt2 = tk.get_builtin("gpt2")
    segments = gpt2.segments(CHINESE_NOTE)
    assert "".join(s["text"] for s in segments) == CHINESE_NOTE
    assert [i for s in segments for i in s["ids"]] == gpt2.encode(CHINESE_NOTE)
    spring = segments[0]
    assert spring["text"] == "春" and len(spring["ids"]) > 1  # one character, several tokens
    assert spring["bytes_hex"] == [gpt2.token_bytes(i).hex() for i in spring["ids"]]
    assert "".join(spring["bytes_hex"]) == "春".encode().hex()


def test_segments_group_emoji_and_mark_special_tokens():
    gpt2 = tk.get_builtin("gpt2")
    segments = gpt2.segments("🦜 ok<|endoftext|>", allow_special=True)
    assert segments[0] == {"text": "🦜", "ids": gpt2.encode("🦜"),
                           "bytes_hex": [gpt2.token_bytes(i).hex() for i in gpt2.encode("🦜")]}
    assert len(segments[0]["ids"]) == 3
    assert segments[1] == {"text": " ok", "ids": gpt2.encode(" ok")}  # whole tokens carry no bytes_hex
    assert segments[2] == {"text": "<|endoftext|>", "ids": [50256], "special": True}


def test_segments_of_a_cut_character_have_no_text():
    gpt2 = tk.get_builtin("gpt2")
    first_half = gpt2.encode("🦜")[:2]
    assert gpt2.segments_for_ids(first_half) == [
        {"text": None, "ids": first_half, "bytes_hex": [gpt2.token_bytes(i).hex() for i in first_half]}]


# ---------------------------------------------------------------------------------------------------------------------
# merges and the merge-limit slider


def test_recovered_cl100k_merges_rebuild_their_tokens():
    cl100k = tk.get_builtin("cl100k_base")
    for word in [" hello", "hello", " world", "ing", "!!", "中国"]:
        (token_id,) = cl100k.encode(word)
        merge = tk.recover_merge(cl100k.mergeable_ranks, word.encode())
        assert merge.rank == token_id and merge.merged == word.encode()
        assert merge.left < token_id and merge.right < token_id
        assert cl100k.token_bytes(merge.left) + cl100k.token_bytes(merge.right) == word.encode()
    assert tk.recover_merge(cl100k.mergeable_ranks, b"hello") == (15339, 71, 4896, b"hello")  # "h" + "ello"


def test_gpt2_merge_tree_starts_with_space_t():
    gpt2 = tk.get_builtin("gpt2")
    merges = gpt2.merges()
    assert len(merges) == gpt2.n_merges == 50000
    assert merges[0] == (256, 220, 83, b" t")  # GPT-2's vocab.bpe begins "Ġ t"
    assert all(gpt2.token_bytes(m.left) + gpt2.token_bytes(m.right) == m.merged for m in merges[::997])


@pytest.mark.parametrize("name", ["gpt2", "cl100k_base", "o200k_base"])
def test_merge_limit_zero_gives_bytes_and_full_limit_equals_encode(name, samples):
    tok = tk.get_builtin(name)
    for text in samples.values():
        byte_ids = tok.encode_with_merge_limit(text, 0)
        assert [tok.token_bytes(i) for i in byte_ids] == [bytes([b]) for b in text.encode("utf-8")]
        assert tok.encode_with_merge_limit(text, tok.n_merges) == tok.encode(text)
    text = "a<|endoftext|>b"
    assert tok.encode_with_merge_limit(text, tok.n_merges, allow_special=True) == tok.encode(text, allow_special=True)


def test_merge_limit_grows_tokens_monotonically(samples):
    gpt2 = tk.get_builtin("gpt2")
    lengths = [len(gpt2.encode_with_merge_limit(samples["english"], n)) for n in (0, 1, 10, 100, 1000, 50000)]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] > lengths[-1]
    with pytest.raises(tk.TokenizerError, match="n_merges must be an integer from 0 to 50000"):
        gpt2.encode_with_merge_limit("x", 50001)


# ---------------------------------------------------------------------------------------------------------------------
# character-level tokenizer


def test_char_tokenizer_numbers_sorted_characters_and_round_trips(shakespeare):
    tok = tk.CharTokenizer.from_text(shakespeare)
    assert tok.kind == "char" and tok.n_vocab == len(set(shakespeare))
    assert tok.chars == sorted(tok.chars) and tok.encode("\n") == [0]
    text = shakespeare[:5000]
    assert tok.decode(tok.encode(text)) == text
    assert tok.segments("To be")[0] == {"text": "T", "ids": tok.encode("T")}
    assert tok.encode_with_merge_limit("To be", 0) == tok.encode("To be") and tok.merges() == []


def test_char_tokenizer_survives_json(song_ci):
    tok = tk.CharTokenizer.from_text(song_ci[:20_000], name="song")
    again = tk.CharTokenizer.from_json(tok.to_json())
    assert again.name == "song" and again.chars == tok.chars
    assert again.encode(song_ci[:2000]) == tok.encode(song_ci[:2000])


def test_char_tokenizer_names_unknown_characters():
    tok = tk.CharTokenizer.from_text("abc ")
    with pytest.raises(tk.TokenizerError, match=r"2 character\(s\) not in the vocabulary of 'char': 'x', 'z'"):
        tok.encode("a cab xz")
    with pytest.raises(tk.TokenizerError, match="no token with id 4"):
        tok.decode([0, 4])


# ---------------------------------------------------------------------------------------------------------------------
# BPE training


@pytest.fixture(scope="module")
def mixed_text(shakespeare, song_ci):
    return shakespeare[:60_000] + "\n<|endoftext|>\n" + song_ci[:15_000] + "\n" + EMOJI * 3


@pytest.fixture(scope="module")
def trained(mixed_text):
    return tk.train_bpe(mixed_text, 600, pattern="gpt4")


def test_trained_bpe_has_bytes_then_merges_then_specials(trained):
    assert trained.kind == "bpe" and trained.n_vocab == 600 and trained.n_merges == 600 - 256 - 1
    assert all(trained.mergeable_ranks[bytes([b])] == b for b in range(256))
    assert trained.special_tokens == {"<|endoftext|>": 599}
    merges = trained.merges()
    assert [m.rank for m in merges] == list(range(256, 599))
    assert all(m.merged == trained.token_bytes(m.left) + trained.token_bytes(m.right) for m in merges)
    assert len(trained.merge_counts) == len(merges)
    # a merge only removes occurrences or makes pairs with the new token, never more frequent than the merged pair
    assert trained.merge_counts == sorted(trained.merge_counts, reverse=True) and trained.merge_counts[-1] >= 2
    assert not any(b"<|" in m.merged for m in merges)  # the special token was cut out of the training text


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_tiktoken_encoding_equals_applying_merges_in_rank_order(pattern, mixed_text, shakespeare, song_ci):
    tok = tk.train_bpe(mixed_text, 800, pattern=pattern)
    held_out = [shakespeare[200_000:205_000], song_ci[500_000:501_500], EMOJI, CHINESE_NOTE + " 🙂🙂 ok"]
    for text in held_out:
        ids = tok.encode(text)
        assert ids == minbpe_encode(tok, text)
        assert tok.decode(ids) == text
    # and the merges are the very ones minbpe's recover_merges finds in the ranks (the merge tree is unambiguous)
    assert all(tk.recover_merge(tok.mergeable_ranks, m.merged) == m for m in tok.merges())


def test_bpe_exact_on_repetitive_text_with_overlapping_pairs():
    rng = random.Random(0)
    words = lambda n: " ".join("".join(rng.choice("aab") for _ in range(rng.randint(1, 12))) for _ in range(n))
    tok = tk.train_bpe(words(3000) + " aaaaaaaaaaaaaaaa bbbbbbbbbb", 420, pattern="gpt2")
    held_out = words(500) + " aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
    assert tok.encode(held_out) == minbpe_encode(tok, held_out)


def test_merge_limit_on_trained_bpe_applies_the_first_merges(trained, samples):
    for n in (0, 1, 7, 50, 200, trained.n_merges):
        for text in samples.values():
            assert trained.encode_with_merge_limit(text, n) == minbpe_encode(trained, text, n_merges=n)


def test_bpe_save_and_load_round_trip(trained, tmp_path, samples):
    trained.save(tmp_path / "tok")
    assert (tmp_path / "tok" / "bpe.tiktoken").exists()
    meta = json.loads((tmp_path / "tok" / "bpe.json").read_text())
    assert meta["pattern"] == "gpt4" and meta["merge_counts"] == trained.merge_counts
    loaded = tk.load_bpe(tmp_path / "tok")
    assert loaded.mergeable_ranks == trained.mergeable_ranks and loaded.merges() == trained.merges()
    assert loaded.special_tokens == trained.special_tokens and loaded.merge_counts == trained.merge_counts
    for text in samples.values():
        assert loaded.encode(text, allow_special=True) == trained.encode(text, allow_special=True)
    # the ranks file is plain tiktoken format: tiktoken's own loader reads it
    assert tiktoken.load.load_tiktoken_bpe(str(tmp_path / "tok" / "bpe.tiktoken")) == trained.mergeable_ranks


def test_loading_a_tampered_bpe_fails_clearly(trained, tmp_path):
    trained.save(tmp_path)
    ranks_file = tmp_path / "bpe.tiktoken"
    ranks_file.write_bytes(ranks_file.read_bytes().replace(b" 300\n", b" 301\n"))
    with pytest.raises(tk.TokenizerDataError, match=r"bpe\.tiktoken is corrupt: sha256"):
        tk.load_bpe(tmp_path)
    with pytest.raises(tk.TokenizerDataError, match="bpe.json is missing"):
        tk.load_bpe(tmp_path / "nowhere")


def test_a_save_that_fails_midway_leaves_the_previous_tokenizer_loadable(trained, tmp_path, monkeypatch):
    trained.save(tmp_path)
    smaller = tk.train_bpe("hello hello world", 260, name="smaller")
    real_write_bytes = Path.write_bytes

    def disk_full(self, data):
        real_write_bytes(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OSError, match="No space"):
        tk.save_bpe(smaller, tmp_path)
    monkeypatch.undo()
    assert tk.load_bpe(tmp_path).mergeable_ranks == trained.mergeable_ranks
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bpe.json", "bpe.tiktoken"], "no temporary file is left"


@pytest.mark.parametrize("vocab_size", [255, 256, 65537, "512", True, 300.0])
def test_vocab_size_out_of_bounds_is_refused(vocab_size):
    with pytest.raises(tk.TokenizerError, match="vocab_size"):
        tk.train_bpe("hello hello", vocab_size)


def test_vocab_size_bounds_count_special_tokens():
    assert tk.train_bpe("hello hello", 256, special_tokens=[]).n_vocab == 256
    assert tk.train_bpe("hello hello", 257).n_vocab == 257
    with pytest.raises(tk.TokenizerError, match="unknown split pattern 'gpt3': choose one of gpt2, gpt4"):
        tk.train_bpe("hello", 300, pattern="gpt3")


def test_training_stops_early_when_text_runs_out_of_pairs():
    tok = tk.train_bpe("ab ab ab", 1000)
    assert tok.n_merges == 2 and tok.vocab_size == 1000 and tok.n_vocab == 256 + 2 + 1
    assert tok.encode(" ab") == [257]


def test_training_reports_progress_and_can_be_cancelled(shakespeare):
    progress = []
    tk.train_bpe(shakespeare[:10_000], 300, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(k, 43) for k in range(1, 44)]
    calls = []
    with pytest.raises(tk.TokenizerTrainingCancelled, match="after 5 of 43 merges"):
        tk.train_bpe(shakespeare[:10_000], 300, should_stop=lambda: calls.append(1) or len(calls) > 5)
