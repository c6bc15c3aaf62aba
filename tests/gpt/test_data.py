import os

import numpy as np
import pytest
import torch

from workers.gpt import data
from workers.gpt.data import TokenWriter, dtype_for_vocab, get_batch, open_tokens, write_tokens


def test_dtype_for_vocab_picks_uint16_up_to_65536_and_uint32_above():
    assert dtype_for_vocab(50257) == np.uint16
    assert dtype_for_vocab(65536) == np.uint16  # ids 0..65535
    assert dtype_for_vocab(65537) == np.uint32
    assert dtype_for_vocab(200_000) == np.uint32


@pytest.mark.parametrize("vocab_size", [1000, 100_000])
def test_tokens_round_trip_through_a_memmap(tmp_path, vocab_size):
    ids = np.random.default_rng(0).integers(0, vocab_size, size=1000)
    path = write_tokens(tmp_path / "train.tokens", ids, dtype_for_vocab(vocab_size))
    tokens = open_tokens(path)
    assert isinstance(tokens, np.memmap)
    assert tokens.dtype == dtype_for_vocab(vocab_size)
    np.testing.assert_array_equal(tokens, ids)
    assert os.path.getsize(path) == data.HEADER.size + 1000 * tokens.dtype.itemsize


def test_an_empty_shard_opens_as_zero_tokens(tmp_path):
    tokens = open_tokens(write_tokens(tmp_path / "empty.tokens", [], np.uint16))
    assert len(tokens) == 0


def test_token_writer_streams_chunks(tmp_path):
    path = tmp_path / "big.tokens"
    with TokenWriter(path, np.uint32) as w:
        for start in range(0, 300, 100):
            w.write(np.arange(start, start + 100))
    np.testing.assert_array_equal(open_tokens(path), np.arange(300))


def test_ids_that_do_not_fit_the_dtype_are_refused(tmp_path):
    with pytest.raises(ValueError, match="dtype_for_vocab"):
        write_tokens(tmp_path / "x.tokens", [1, 70000], np.uint16)
    assert list(tmp_path.iterdir()) == []  # no shard and no temporary file left behind


def test_a_failed_write_leaves_the_old_shard_untouched(tmp_path, monkeypatch):
    path = write_tokens(tmp_path / "x.tokens", [1, 2, 3], np.uint16)

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(data.os, "replace", crash)
    with pytest.raises(OSError):
        write_tokens(path, [4, 5, 6, 7], np.uint16)
    np.testing.assert_array_equal(open_tokens(path), [1, 2, 3])
    assert [p.name for p in tmp_path.iterdir()] == ["x.tokens"]


def test_a_truncated_shard_is_detected(tmp_path):
    path = write_tokens(tmp_path / "x.tokens", np.arange(100), np.uint16)
    with open(path, "r+b") as f:
        f.truncate(data.HEADER.size + 50)
    with pytest.raises(ValueError, match="truncated"):
        open_tokens(path)


def test_a_file_without_the_header_is_not_a_shard(tmp_path):
    path = tmp_path / "raw.bin"
    np.arange(10, dtype=np.uint16).tofile(path)  # a nanoGPT-style raw file
    with pytest.raises(ValueError, match="not a token shard"):
        open_tokens(path)


def test_batch_targets_are_the_inputs_shifted_by_one(tmp_path):
    tokens = open_tokens(write_tokens(tmp_path / "x.tokens", np.arange(1000) % 500, np.uint16))
    x, y = get_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    torch.testing.assert_close(x[:, 1:], y[:, :-1])
    assert ((y - x) % 500 == 1).all()


def test_the_same_generator_seed_gives_the_same_batches():
    tokens = torch.arange(1000)
    a = get_batch(tokens, 4, 16, torch.Generator().manual_seed(7))
    b = get_batch(tokens, 4, 16, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_data_shorter_than_a_block_says_what_to_do():
    with pytest.raises(ValueError, match="use a smaller block_size or more data"):
        get_batch(np.arange(16), 2, 16)


def test_the_unigram_loss_is_the_cross_entropy_of_smoothed_training_frequencies():
    import math

    from workers.gpt.data import unigram_loss

    train = np.array([0, 0, 0, 1], dtype=np.uint16)  # counts + 1 over a vocabulary of 3: 4, 2, 1 (of 7)
    val = np.array([0, 1, 2], dtype=np.uint16)
    expected = -(math.log(4 / 7) + math.log(2 / 7) + math.log(1 / 7)) / 3
    assert unigram_loss(train, val, 3) == pytest.approx(expected, abs=1e-12)
    # uniform data: the unigram table can do no better than guessing uniformly, ln(V)
    uniform = np.tile(np.arange(8, dtype=np.uint16), 1000)
    assert unigram_loss(uniform, uniform, 8) == pytest.approx(math.log(8), abs=1e-9)
