"""The worker's side of generation (workers/inference.py), run in-process against the real Redis channel layer:
what it streams, how it ends, and that its tokens are the library's own (the reference is generate() called
directly on the same weights)."""

import asyncio
import threading

import pytest
from channels.layers import get_channel_layer

from apps.inference import realtime, services
from apps.inference.models import Generation
from tests.apps.registry.factories import make_model
from tests.apps.registry.conftest import ada, run_checkpoint  # noqa: F401  (fixtures)
from tests.conftest import run_async
from workers import inference
from workers.model_cache import ModelCache, model_spec

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

CHAT = [{"role": "user", "content": "Speak, speak."}]


@pytest.fixture
def tiny(tmp_path):
    inference.model_cache.clear()
    return make_model(tmp_path, name="Tiny")


def create(model, **kw):
    kw.setdefault("mode", "chat")
    if kw["mode"] == "chat":
        kw.setdefault("messages", CHAT)
    return services.generation_create(user=None, model_ref=model.slug, client="test", **kw)


def stream(generation, *, while_running=None):
    """Run completion_stream on a thread (as the worker does) and collect every event its group receives."""

    async def scenario():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(realtime.completion_group(generation.pk), channel)
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(None, lambda: inference.completion_stream(generation_id=generation.pk, worker="t"))
        events = []
        while True:
            event = await asyncio.wait_for(layer.receive(channel), 60)
            events.append(event)
            if event["type"] == realtime.TOKENS and while_running is not None:
                await loop.run_in_executor(None, while_running)
            if event["type"] == realtime.STATE and event["status"] in realtime.FINISHED:
                break
        return await done, events

    status, events = run_async(scenario())
    generation.refresh_from_db()
    return status, events


def streamed_tokens(events):
    """The token records the events carry, checked to be contiguous (offsets place every batch)."""
    records = []
    for e in events:
        if e["type"] == realtime.TOKENS:
            assert e["offset"] == len(records), "batches arrive in order with no gap or overlap here"
            records.extend(e["tokens"])
    return records


def reference_ids(model_row, prompt_ids, **sampling):
    from workers.gpt.generate import generate

    loaded, _ = inference.model_cache.get(model_spec(model_row))
    return [t.id for t in generate(loaded.model, prompt_ids, stop_ids=model_row.stop_ids, **sampling)]


def test_a_greedy_chat_streams_the_librarys_own_tokens_and_ends_with_a_final_event(tiny):
    gen = create(tiny, params={"temperature": 0, "max_new_tokens": 20, "repetition_penalty": 1.0})
    status, events = stream(gen)
    assert status == "done"
    kinds = [(e["type"], e.get("status")) for e in events]
    assert kinds[0] == (realtime.STATE, "loading") and kinds[1] == (realtime.STATE, "running")
    final = events[-1]
    records = streamed_tokens(events)
    assert final["n_tokens"] == len(records) == gen.n_tokens and gen.tokens == records
    assert final["stop_reason"] in ("eos", "length") and gen.stop_reason == final["stop_reason"]
    loaded, warm = inference.model_cache.get(model_spec(tiny))
    assert warm
    prompt = inference._prompt_ids(gen, loaded.tokenizer)
    assert events[1]["prompt_tokens"] == len(prompt) == gen.prompt_tokens
    assert [r["id"] for r in records] == reference_ids(tiny, prompt, max_new_tokens=20, temperature=0)
    assert gen.text == "".join(r["t"] for r in records if not r.get("eos"))
    first = records[0]
    assert first["alt"][0][0] == first["id"] and abs(sum(a[2] for a in first["ralt"]) - 1) < 1  # top-8 of a softmax
    assert {"ttft_ms", "tokens_per_s", "queue_ms", "load_ms"} <= set(gen.stats)


def test_the_same_seed_gives_the_same_output_and_another_seed_another(tiny):
    def run(seed):
        gen = create(tiny, mode="completion", prompt="All:", params={"temperature": 1.5, "top_k": 0, "top_p": 1,
                                                                      "min_p": 0, "seed": seed, "max_new_tokens": 30})
        stream(gen)
        return [t["id"] for t in gen.tokens]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_a_stop_string_ends_the_generation_and_cuts_the_text_before_it(tiny):
    free = create(tiny, mode="completion", prompt="First", params={"temperature": 0, "max_new_tokens": 30,
                                                                  "repetition_penalty": 1.0})
    stream(free)
    text = free.text
    stop = text[len(text) // 2: len(text) // 2 + 2]
    assert stop.strip(), text
    cut = create(tiny, mode="completion", prompt="First", params={"temperature": 0, "max_new_tokens": 30,
                                                                 "repetition_penalty": 1.0, "stop": [stop]})
    _, events = stream(cut)
    assert cut.stop_reason == "stop" and cut.text == text[: text.index(stop)]
    assert events[-1]["text"] == cut.text


def test_max_new_tokens_ends_a_generation_with_reason_length(tiny):
    gen = create(tiny, mode="completion", prompt="You", params={"temperature": 1.0, "max_new_tokens": 5, "seed": 1})
    stream(gen)
    if gen.stop_reason == "length":
        assert gen.n_tokens == 5
    else:  # the end-of-text token came first
        assert gen.stop_reason == "eos" and gen.tokens[-1].get("eos")


def test_stop_mid_stream_ends_it_at_once_and_frees_the_worker(tmp_path):
    inference.model_cache.clear()
    model = make_model(tmp_path, name="Slow", n_embd=64, ctx=64)
    gen = create(model, mode="completion", prompt="First", params={"max_new_tokens": 2000, "seed": 3})
    asked = threading.Event()

    def press_stop():
        if not asked.is_set():
            asked.set()
            services.generation_stop(generation=gen)

    status, events = stream(gen, while_running=press_stop)
    assert status == Generation.Status.STOPPED and gen.stop_reason == "user"
    assert 0 < gen.n_tokens < 2000
    assert events[-1]["status"] == "stopped" and events[-1]["n_tokens"] == gen.n_tokens


def test_a_generation_stopped_while_queued_never_runs(tiny):
    gen = create(tiny)
    services.generation_stop(generation=gen, reason=Generation.StopReason.DISCONNECTED)
    gen.refresh_from_db()
    assert gen.status == Generation.Status.STOPPED
    assert inference.completion_stream(generation_id=gen.pk, worker="t") == "skipped"


def test_a_prompt_longer_than_the_context_is_cropped_with_a_note(tiny):
    gen = create(tiny, mode="completion", prompt="Speak, speak. " * 60, params={"max_new_tokens": 3, "seed": 1})
    _, events = stream(gen)
    running = events[1]
    # a code and its numbers: the page words it in the reader's language (static/js/inference/state.js)
    assert running["cropped"] and running["notes"] == [{"code": "cropped", "context": running["prompt_tokens"],
                                                        "model": tiny.name, "block": 64}]
    assert running["prompt_tokens"] > 64
    assert gen.cropped and gen.status == "done"


def test_a_reply_that_outgrows_the_context_gets_a_quiet_note_not_a_warning(tiny):
    # the tiny model's block_size is 64: 80 new tokens after a short prompt slide the window
    gen = create(tiny, mode="completion", prompt="Speak", params={"max_new_tokens": 80, "seed": 1,
                                                                  "repetition_penalty": 1.0})
    _, events = stream(gen)
    final = events[-1]
    assert final["n_tokens"] == 80 and final["notes"] == []
    assert final["context_notes"] == [{"code": "context_window", "model": tiny.name, "block": 64}]


def test_a_branch_keeps_the_parents_tokens_then_the_alternative_picked(tiny):
    parent = create(tiny, params={"temperature": 0, "max_new_tokens": 12, "repetition_penalty": 1.0})
    stream(parent)
    assert parent.n_tokens > 3
    index = 2
    alternative = parent.tokens[index]["ralt"][1]  # the raw distribution's second choice
    child = services.generation_branch(parent=parent, index=index, token_id=alternative[0], user=None, client="t")
    _, events = stream(child)
    records = streamed_tokens(events)
    assert [r["id"] for r in records[:index]] == [r["id"] for r in parent.tokens[:index]]
    assert records[index]["id"] == alternative[0] and records[index]["forced"]
    assert child.tokens == records and child.parent == parent and len(records) <= 12
    loaded, _ = inference.model_cache.get(model_spec(tiny))
    context = inference._prompt_ids(child, loaded.tokenizer) + [r["id"] for r in records[: index + 1]]
    continuation = reference_ids(tiny, context, max_new_tokens=12 - index - 1, temperature=0)
    assert [r["id"] for r in records[index + 1:]] == continuation


def test_a_branch_must_pick_a_shown_alternative(tiny):
    parent = create(tiny, params={"temperature": 0, "max_new_tokens": 4})
    stream(parent)
    shown = {a[0] for a in parent.tokens[0]["alt"] + parent.tokens[0]["ralt"]}
    other = next(i for i in range(tiny.config["vocab_size"]) if i not in shown)
    with pytest.raises(services.InferenceError, match="alternatives shown"):
        services.generation_branch(parent=parent, index=0, token_id=other, user=None, client="t")
    with pytest.raises(services.InferenceError, match="position"):
        services.generation_branch(parent=parent, index=99, token_id=other, user=None, client="t")


def test_the_cache_keeps_models_warm_and_evicts_the_least_recently_used(tmp_path):
    a = make_model(tmp_path, name="A")
    b = make_model(tmp_path, name="B")
    a, b = model_spec(a), model_spec(b)
    cache = ModelCache(max_bytes=10**9)
    first, warm = cache.get(a)
    assert not warm and cache.get(a) == (first, True)
    cache.max_bytes = first.nbytes + 1  # room for one model only
    cache.get(b)
    assert cache.has(b) and not cache.has(a)


def test_a_model_whose_weights_vanished_fails_with_a_reason(tiny):
    gen = create(tiny)
    tiny.file.unlink()
    _, events = stream(gen)
    assert gen.status == "failed" and "could not generate" in gen.error
    assert events[-1]["status"] == "failed" and events[-1]["error"] == gen.error


def test_a_model_promoted_from_a_training_run_generates_the_same_way(run_checkpoint, ada):
    """The other half of 'done': a run's checkpoint, promoted, published, and streamed like SmolLM2."""
    from apps.registry.services import model_promote, model_set_status
    from apps.registry.models import Model
    from django.contrib.auth.models import User

    ckpt, original = run_checkpoint
    model = model_promote(checkpoint=ckpt, user=ada)
    staff = User.objects.create_user("boss", password="pw-boss-1234", is_staff=True)
    model_set_status(models=Model.objects.filter(pk=model.pk), status=Model.Status.PUBLISHED, user=staff)
    gen = create(model, mode="completion", prompt="Hello", params={"temperature": 0, "max_new_tokens": 6,
                                                                   "repetition_penalty": 1.0})
    _, events = stream(gen)
    assert gen.status == "done" and gen.n_tokens == 6
    from workers.gpt.generate import generate
    from workers.gpt.tokenizers import get_builtin

    expected = [t.id for t in generate(original.eval(), get_builtin("gpt2").encode("Hello"), max_new_tokens=6,
                                       temperature=0)]
    assert [r["id"] for r in streamed_tokens(events)] == expected
