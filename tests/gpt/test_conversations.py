"""conversations.py: JSONL validation line by line (each bad line named, nothing partial) and the bundled sets."""

import json
from pathlib import Path

import pytest

from workers.gpt.conversations import ConversationError, dump_jsonl, parse_jsonl, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                     {"role": "assistant", "content": "Hello."}]}


def line(obj) -> str:
    return json.dumps(obj, ensure_ascii=False)


def errors_of(data) -> list[tuple[int, str]]:
    with pytest.raises(ConversationError) as info:
        parse_jsonl(data)
    return [(e.line, e.message) for e in info.value.errors]


def test_it_reads_good_lines_and_skips_blank_ones():
    data = line(GOOD) + "\n\n" + line({"messages": [{"role": "assistant", "content": "Hi, I am here."}]}) + "\n"
    convs = parse_jsonl(data)
    assert len(convs) == 2
    assert convs[0] == GOOD["messages"]
    assert parse_jsonl(dump_jsonl(convs)) == convs


def test_it_reads_crlf_and_a_byte_order_mark():
    data = ("\ufeff" + line(GOOD) + "\r\n" + line(GOOD) + "\r\n").encode("utf-8")
    assert len(parse_jsonl(data)) == 2


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"conversation": []}', "no \"messages\" key"),
    ('{"messages": "hi"}', "\"messages\" must be a list"),
    ('{"messages": []}', "\"messages\" is empty"),
    ('{"messages": ["hi"]}', "message 0 must be an object"),
    ('{"messages": [{"role": "bot", "content": "hi"}]}', "message 0 has role 'bot'"),
    ('{"messages": [{"role": "user"}]}', "message 0 (user) has content of type null"),
    ('{"messages": [{"role": "assistant", "content": ["a", "b"]}]}', "has content of type a list"),
    ('{"messages": [{"role": "user", "content": "2 + 2?"}]}', "no assistant message"),
    ('{"messages": [{"role": "assistant", "content": "\\ud800"}]}', "lone surrogate"),
])
def test_it_names_what_is_wrong_with_a_line(text, expected):
    data = line(GOOD) + "\n" + text + "\n"
    [(number, message)] = errors_of(data)
    assert number == 2
    assert expected in message


def test_it_rejects_invalid_utf8_by_line():
    data = line(GOOD).encode() + b"\n" + b'{"messages": [{"role": "assistant", "content": "caf\xe9"}]}\n'
    [(number, message)] = errors_of(data)
    assert number == 2 and "not valid UTF-8" in message


def test_it_rejects_a_line_too_large():
    big = line({"messages": [{"role": "assistant", "content": "x" * 2000}]})
    with pytest.raises(ConversationError) as info:
        parse_jsonl(line(GOOD) + "\n" + big + "\n", max_line_bytes=1000)
    [error] = info.value.errors
    assert error.line == 2 and "more than the 1,000 allowed" in error.message


def test_it_lists_every_bad_line_and_returns_nothing():
    data = "\n".join([line(GOOD), "oops", line(GOOD), '{"messages": [{"role": "user", "content": "?"}]}'])
    with pytest.raises(ConversationError) as info:
        parse_jsonl(data)
    assert [e.line for e in info.value.errors] == [2, 4]
    assert "2 bad line(s): line 2: not valid JSON" in str(info.value)
    assert "upload the file again" in str(info.value)


def test_it_rejects_an_empty_file():
    assert errors_of("\n\n") == [(1, "the file holds no conversations")]


def test_the_bundled_sets_parse_and_the_char_set_fits_the_shakespeare_alphabet():
    alphabet = set((ROOT / "data/corpora/shakespeare.txt").read_text(encoding="utf-8"))
    sizes = {}
    for name in ("char", "general"):
        for split in ("train", "val"):
            path = ROOT / "data/conversations" / name / f"{split}.jsonl"
            assert path.stat().st_size < 3_000_000
            sizes[name, split] = len(read_jsonl(path))
    assert sizes[("char", "train")] >= 3000 and sizes[("general", "train")] > sizes[("char", "train")]
    for split in ("train", "val"):
        for conv in read_jsonl(ROOT / "data/conversations/char" / f"{split}.jsonl"):
            for m in conv:
                assert set(m["content"]) <= alphabet, m["content"]


def test_the_bundled_val_shakespeare_lines_are_from_the_held_out_end():
    text = (ROOT / "data/corpora/shakespeare.txt").read_text(encoding="utf-8")
    cut = int(len(text) * 0.9)
    for conv in read_jsonl(ROOT / "data/conversations/char/val.jsonl")[:100]:
        for m in conv:
            if m["role"] == "user" and m["content"].startswith("Continue this speech: "):
                assert text.find(m["content"].removeprefix("Continue this speech: ") + "\n", cut) >= cut


def test_the_build_scripts_reproduce_the_committed_files(tmp_path):
    import importlib.util

    for rel in ("data/conversations/build.py", "data/evals/build.py"):
        spec = importlib.util.spec_from_file_location(f"build_{tmp_path.name}_{rel.split('/')[1]}", ROOT / rel)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        built = module.build()
        if rel.startswith("data/conversations"):
            committed = (ROOT / "data/conversations/char/val.jsonl").read_text(encoding="utf-8")
            assert "".join(line(c) + "\n" for c in built["char"]["val"]) == committed
        else:
            committed = (ROOT / "data/evals/shakespeare-words.jsonl").read_text(encoding="utf-8")
            assert "".join(line(p) + "\n" for p in built) == committed
