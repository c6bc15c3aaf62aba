"""BPE training to 4,096 tokens on shakespeare.txt: our trainer (minbpe's algorithm, exact under tiktoken) and the
whole training job (child process, save, verify), beside Hugging Face `tokenizers`' BpeTrainer on the same text with
the same split pattern, in the same run. Target from issue 3: seconds, not minutes."""

import os
import time

import pytest

from apps.corpora import services as corpora_services
from apps.system.models import JobStatus
from apps.tokenization import services
from workers import tokenization as glue
from workers.gpt import tokenizers as toklib

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]


def hf_train(text: str, vocab_size: int) -> tuple[float, int]:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(toklib.CL100K_PAT_STR), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[toklib.ENDOFTEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t = time.perf_counter()
    tok.train_from_iterator([text], trainer=trainer)
    return time.perf_counter() - t, tok.get_vocab_size()


def test_bpe_training_time_beside_hugging_face(user):
    text = open("data/corpora/shakespeare.txt", encoding="utf-8").read()
    t = time.perf_counter()
    ours = toklib.train_bpe(text, 4096, "gpt4")
    ours_s = time.perf_counter() - t
    hf_s, hf_vocab = hf_train(text, 4096)
    corpus = corpora_services.corpus_create(name="Shakespeare", owner=user, text=text)
    row = services.tokenizer_train_create(user=user, corpus=corpus, name="bench-4096", vocab_size=4096, pattern="gpt4",
                                          special_tokens=[toklib.ENDOFTEXT])
    t = time.perf_counter()
    assert glue.tokenizer_train(tokenizer_id=row.id) == "succeeded"
    job_s = time.perf_counter() - t
    row.refresh_from_db()
    assert row.status == JobStatus.SUCCEEDED and row.n_vocab == 4096 and ours.n_vocab == 4096
    threads = os.environ.get("RAYON_NUM_THREADS", f"all {os.cpu_count()} cores")
    print(f"\nBPE to 4,096 tokens on shakespeare.txt ({len(text.encode()):,} bytes), GPT-4 split pattern")
    print(f"  ours: train_bpe {ours_s:.2f} s | whole job (child process, save, verify) {job_s:.2f} s")
    print(f"  Hugging Face tokenizers BpeTrainer ({threads}): {hf_s:.2f} s (vocab {hf_vocab:,})")
    print(f"  ratio ours / HF: train_bpe {ours_s / hf_s:.2f}x, job {job_s / hf_s:.2f}x")
