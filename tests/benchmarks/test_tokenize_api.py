"""Playground/API speed: tokenizing 100 KB through POST /api/tokenize (JSON in, per-token JSON out) against raw
tiktoken encoding the same text in the same run. Target from issue 3: at most 1.3x."""

import json
import time

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory

from apps.tokenization import api
from apps.tokenization.services import tokenizer_seed_builtins
from workers.gpt.tokenizers import get_builtin

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_clean")]

TEXT = open("data/corpora/shakespeare.txt", encoding="utf-8").read()[200_000:300_000]  # 100 KB of English
ROUNDS = 15


def interleaved_best(fns) -> list[float]:
    times = [[] for _ in fns]
    for _ in range(ROUNDS):
        for fn, bucket in zip(fns, times):
            t = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t)
    return [min(bucket) for bucket in times]


def test_tokenize_api_overhead_over_raw_tiktoken(user):
    tokenizer_seed_builtins()
    factory = RequestFactory()
    print(f"\n100 KB ({len(TEXT.encode()):,} bytes) of Shakespeare, best of {ROUNDS}; target: API <= 1.3x raw tiktoken")
    for name in ("gpt2", "cl100k_base", "o200k_base"):
        enc = get_builtin(name).encoding
        body = json.dumps({"text": TEXT, "tokenizer": name})

        def call(who):
            request = factory.post("/api/tokenize", data=body, content_type="application/json")
            request.user = who
            response = api.tokenize(request)
            assert response.status_code == 200
            return response

        expected = enc.encode_ordinary(TEXT)
        assert json.loads(call(user).content)["count"] == len(expected)  # warm: builds the per-token JSON cache
        from apps.corpora.text import safe_spans

        pieces = [TEXT[a:b] for a, b in safe_spans(TEXT, 0, len(TEXT), len(TEXT) // 4)]
        # alternate the four measurements, best of each: fair to all on a busy machine
        def naive():  # what the same answer costs written plainly on top of tiktoken
            ids = enc.encode_ordinary(TEXT)
            tokens = [{"id": i, "text": b.decode("utf-8", "replace"), "bytes": list(b)}
                      for i, b in zip(ids, enc.decode_tokens_bytes(ids))]
            return json.dumps({"tokenizer": name, "count": len(ids), "tokens": tokens}).encode()

        raw, raw_batch, signed_in, anonymous, plain = interleaved_best([
            lambda: enc.encode_ordinary(TEXT),
            lambda: enc.encode_ordinary_batch(pieces, num_threads=2),
            lambda: call(user),
            lambda: call(AnonymousUser()),  # + the Redis rate-limit counter
            naive,
        ])
        print(f"  {name:12s} raw tiktoken encode {raw * 1e3:6.2f} ms (its 2-thread batch on the same text "
              f"{raw_batch * 1e3:5.2f} ms) | API signed in {signed_in * 1e3:6.2f} ms = {signed_in / raw:.2f}x raw "
              f"({signed_in / raw_batch:.2f}x the batch) | anonymous, rate-limited {anonymous * 1e3:6.2f} ms = "
              f"{anonymous / raw:.2f}x | {len(expected):,} tokens")
        print(f"  {'':12s} for scale: the same JSON answer written plainly on tiktoken (encode, decode_tokens_bytes, "
              f"json.dumps) takes {plain * 1e3:6.2f} ms = {plain / raw:.2f}x raw; ours is {signed_in / plain:.2f}x that")
