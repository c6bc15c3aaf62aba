"""The explorer's worker glue, run in-process: a Trace row in, a trace file and a final event out."""

import asyncio

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from apps.explorer import realtime, services
from apps.explorer.models import Trace
from tests.apps.explorer.conftest import ckpt, owner, run  # noqa: F401  (fixtures)
from tests.apps.explorer.factories import ALPHABET
from tests.conftest import run_async
from workers import explorer as glue
from workers.gpt.trace import dequantize_attention, unpack

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def _queued(ref, text, owner) -> Trace:
    return services.trace_request(ref=ref, text=text, user=owner, client="127.0.0.1")


def test_a_trace_is_computed_written_and_announced(owner, ckpt):
    trace = _queued(ckpt, "ROMEO: But soft!", owner)

    async def listen():
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(realtime.trace_group(trace.key), channel)
        status = await sync_to_async(glue.trace_compute)(trace_id=trace.pk)
        events = []
        while True:
            try:
                events.append(await asyncio.wait_for(layer.receive(channel), 1))
            except asyncio.TimeoutError:
                return status, events

    status, events = run_async(listen())
    assert status == Trace.Status.READY
    assert [e["status"] for e in events] == ["running", "running", "ready"]
    assert events[0]["phase"] == "loading the model" and events[-1]["type"] == realtime.STATUS
    trace.refresh_from_db()
    assert trace.status == Trace.Status.READY and trace.n_tokens == 16 and trace.notes == []
    header, arrays = unpack(trace.file.read_bytes())
    assert header["tokens"] == list("ROMEO: But soft!")
    assert header["config"]["n_layer"] == 2 and header["step"] == 200
    att = dequantize_attention(arrays["attn"], 16)
    np.testing.assert_allclose(att.sum(-1), 1.0, atol=16 * 0.5 / 255)
    assert trace.size_bytes == trace.file.stat().st_size


def test_text_longer_than_the_block_is_truncated_and_the_trace_says_so(owner, ckpt):
    text = "To be, or not to be, that is the question: whether tis nobler"
    trace = _queued(ckpt, text, owner)
    assert glue.trace_compute(trace_id=trace.pk) == Trace.Status.READY
    trace.refresh_from_db()
    assert trace.n_tokens == 32 and trace.text_tokens == len(text) == 61
    assert trace.notes == ["The text is 61 tokens long; traced the first 32, its block_size for this model."]
    header, _ = unpack(trace.file.read_bytes())
    assert header["notes"] == trace.notes and header["n_tokens"] == 32


def test_characters_the_tokenizer_never_saw_are_left_out_with_a_note(owner, ckpt):
    assert "é" not in ALPHABET
    trace = _queued(ckpt, "café crème", owner)
    glue.trace_compute(trace_id=trace.pk)
    trace.refresh_from_db()
    assert trace.status == Trace.Status.READY and trace.n_tokens == len("caf crme")
    assert trace.notes == ["Left out 2 character(s) this model's tokenizer never saw: 'è' 'é'."]
    nothing = _queued(ckpt, "日本語", owner)
    glue.trace_compute(trace_id=nothing.pk)
    nothing.refresh_from_db()
    assert nothing.status == Trace.Status.FAILED and "None of the text's characters" in nothing.error


def test_a_deleted_tokenizer_or_model_fails_with_a_reason_not_a_hang(owner, run, ckpt):
    trace = _queued(ckpt, "ROMEO", owner)
    run[0].tokenizer.delete()
    assert glue.trace_compute(trace_id=trace.pk) == Trace.Status.FAILED
    trace.refresh_from_db()
    assert "tokenizer was deleted" in trace.error
    gone = _queued(f"checkpoint:{run[1][0].pk}", "ROMEO", owner)
    run[1][0].delete()
    assert glue.trace_compute(trace_id=gone.pk) == Trace.Status.FAILED
    gone.refresh_from_db()
    assert "does not exist any more" in gone.error


def test_a_task_delivered_twice_computes_once(owner, ckpt):
    trace = _queued(ckpt, "ROMEO", owner)
    assert glue.trace_compute(trace_id=trace.pk) == Trace.Status.READY
    assert glue.trace_compute(trace_id=trace.pk) == "skipped"


def test_checkpoints_share_the_infer_workers_warm_model_cache(owner, run, ckpt):
    from apps.explorer.selectors import source_resolve
    from workers.model_cache import model_cache

    model_cache.clear()
    source = source_resolve(ref=ckpt)
    (first, warm1), (second, warm2) = glue.load(source), glue.load(source)
    assert not warm1 and warm2 and first.model is second.model
    other, warm = glue.load(source_resolve(ref=f"checkpoint:{run[1][0].pk}"))
    assert not warm and other.model is not first.model, "each checkpoint is its own entry"


def test_a_registry_model_is_traced_through_the_same_cache(owner, run):
    from tests.apps.explorer.factories import registry_model

    from workers.model_cache import model_cache, model_spec

    model = registry_model(checkpoint=run[1][-1], tokenizer=run[0].tokenizer)
    trace = _queued(f"model:{model.pk}", "ROMEO: hi", owner)
    assert glue.trace_compute(trace_id=trace.pk) == Trace.Status.READY
    assert model_cache.has(model_spec(model)), "the model is now warm for generation too"
    header, _ = unpack(Trace.objects.get(pk=trace.pk).file.read_bytes())
    assert header["kind"] == "model" and header["label"] == "tiny-published" and header["n_tokens"] == 9
