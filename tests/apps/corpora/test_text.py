"""The pure text functions: UTF-8 checking that names the bad byte, statistics, and the split."""

import pytest

from apps.corpora.text import (CorpusInputError, corpus_stats, count_lines, decode_utf8, join_documents, safe_cut,
                               split_point)


def test_it_names_the_first_invalid_byte_with_line_and_column():
    data = "line one\nnaïve café\n".encode("utf-8") + b"caf\xe9 au lait\n"  # Latin-1 é on line 3
    with pytest.raises(CorpusInputError) as exc:
        decode_utf8(data, source="menu.txt")
    message = str(exc.value)
    assert "menu.txt is not valid UTF-8" in message
    at = data.index(0xE9)
    assert f"byte {at:,}" in message
    assert "line 3, column 4" in message and "0xE9" in message
    assert "Save as" in message  # says what to do next


def test_a_character_cut_off_at_the_end_is_reported():
    with pytest.raises(CorpusInputError, match="line 1, column 3.*cuts off"):
        decode_utf8("ab你".encode("utf-8")[:-1], source="x.txt")


def test_bom_is_dropped_crlf_becomes_lf_and_nul_is_refused():
    text, notes = decode_utf8("\ufeffa\r\nb\r\n".encode("utf-8"), source="w.txt")
    assert text == "a\nb\n" and notes == {"bom_removed": True, "crlf_normalized": True}
    with pytest.raises(CorpusInputError, match="NUL character \\(line 2\\).*binary"):
        decode_utf8(b"text\nmore\x00junk", source="b.txt")


def test_documents_are_joined_with_a_blank_line():
    assert join_documents(["a", "b\n", "c"]) == "a\n\nb\n\nc\n"
    assert join_documents(["only"]) == "only"


def test_stats_count_characters_words_and_classes():
    text = "The cat and the hat.\nThe end, 42!\n"
    stats = corpus_stats(text)
    assert stats["distinct_chars"] == len(set(text))
    assert stats["alphabet"] == "".join(sorted(set(text)))
    assert stats["top_chars"][0] == [" ", text.count(" ")]
    assert stats["words"]["kind"] == "words"
    assert stats["words"]["top"][0] == ["the", 3]  # case-folded
    assert stats["words"]["total"] == 8  # the cat and the hat the end 42
    assert stats["classes"]["digits"] == 2 and stats["classes"]["punctuation"] == 3
    assert sum(stats["classes"].values()) == len(text)
    assert count_lines(text) == 2 and count_lines("a\nb") == 2 and count_lines("") == 0


def test_chinese_text_gets_character_pairs_instead_of_words():
    stats = corpus_stats("青山遮不住，毕竟东流去。青山依旧在。\n")
    assert stats["words"]["kind"] == "bigrams"
    assert stats["words"]["top"][0] == ["青山", 2]
    assert stats["cjk_chars"] == 15


def test_the_split_holds_out_the_end_and_cuts_at_a_line_start():
    text = "".join(f"Line number {i} of the play.\n" for i in range(100))
    split = split_point(text, 0.1)
    assert text[split["char"] - 1] == "\n"  # a line start
    assert 0.08 < split["val_chars"] / len(text) < 0.11
    assert split["train_chars"] + split["val_chars"] == len(text)
    assert split["train_bytes"] == len(text[:split["char"]].encode())
    assert split["line"] == text.count("\n", 0, split["char"]) + 1


def test_the_split_keeps_some_validation_text_even_without_a_line_break():
    split = split_point("x" * 50, 0.001)
    assert split["val_chars"] >= 1


def test_safe_cuts_fall_after_a_newline_before_a_letter():
    text = "ab\ncd\n\nef\n 12\n你好"
    assert safe_cut(text, 0) == 3
    assert safe_cut(text, 4) == text.index("你")  # "\n\nef" and "\n 12" are not safe
    assert safe_cut(text, text.index("你") + 1) is None
