import pytest
from django.contrib.auth.models import AnonymousUser, User

from apps.explorer import selectors, services
from apps.explorer.models import Trace
from apps.explorer.selectors import ExplorerError, SourceNotFound

pytestmark = pytest.mark.usefixtures("redis_clean")


def _request(ref, text, user, client="10.0.0.1"):
    return services.trace_request(ref=ref, text=text, user=user, client=client)


def test_a_new_text_is_queued_once_and_the_same_text_again_is_the_same_trace(owner, ckpt, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as queued:
        first = _request(ckpt, "ROMEO: hello", owner)
        again = _request(ckpt, "ROMEO: hello", owner)
    assert first.pk == again.pk and first.status == Trace.Status.QUEUED
    assert len(queued) == 1, "the second request must not queue the work again"
    assert Trace.objects.get().task_id, "the queued task's id is recorded"
    other = _request(ckpt, "ROMEO: hello!", owner)
    assert other.key != first.key


def test_empty_or_huge_text_is_refused_and_changes_nothing(owner, ckpt, settings):
    settings.EXPLORER_MAX_TEXT_CHARS = 100
    with pytest.raises(ExplorerError, match="Type some text"):
        _request(ckpt, " \n\t", owner)
    with pytest.raises(ExplorerError, match="at most 100"):
        _request(ckpt, "x" * 101, owner)
    assert not Trace.objects.exists()


def test_unknown_deleted_or_someone_elses_model_is_not_found(owner, run, ckpt):
    mallory = User.objects.create_user("mallory", password="pw-mallory-123")
    with pytest.raises(SourceNotFound, match="not yours"):
        _request(ckpt, "hi", mallory)
    with pytest.raises(SourceNotFound, match="not yours"):
        _request(ckpt, "hi", AnonymousUser())
    with pytest.raises(SourceNotFound, match="pick a model"):
        _request("checkpoint:abc", "hi", owner)
    with pytest.raises(SourceNotFound, match="pick a model"):
        _request("../../etc/passwd", "hi", owner)
    run[1][-1].file.unlink()
    with pytest.raises(SourceNotFound, match="does not exist any more"):
        _request(ckpt, "hi", owner)
    assert not Trace.objects.exists()


def test_a_flood_of_new_traces_is_rate_limited_but_cached_ones_still_open(owner, ckpt, settings):
    settings.EXPLORER_TRACES_PER_MINUTE = 2
    anon = AnonymousUser()
    ref = ckpt
    Trace.objects.all().delete()
    # anonymous visitors cannot see a run's checkpoints, so count ada's requests: signed in, she gets twice the limit
    for k in range(4):
        _request(ref, f"text {k}", owner)
    with pytest.raises(services.RateLimited, match="4 new traces this minute"):
        _request(ref, "text 5", owner)
    assert Trace.objects.count() == 4
    assert _request(ref, "text 0", owner).text == "text 0", "a text already asked for is not a new trace"
    services.rate_check(client="10.0.0.9", user=anon)
    services.rate_check(client="10.0.0.9", user=anon)
    with pytest.raises(services.RateLimited):
        services.rate_check(client="10.0.0.9", user=anon)
    services.rate_check(client="10.0.0.10", user=anon)  # another visitor has their own allowance


def test_a_failed_or_lost_trace_is_queued_again_when_asked_again(owner, ckpt, settings, django_capture_on_commit_callbacks):
    trace = _request(ckpt, "once more", owner)
    services.trace_fail(trace_id=trace.pk, error="the worker ran out of memory")
    with django_capture_on_commit_callbacks() as queued:
        again = _request(ckpt, "once more", owner)
    assert again.pk == trace.pk and again.status == Trace.Status.QUEUED and again.error == ""
    assert len(queued) == 1
    settings.EXPLORER_TRACE_STALE_SECONDS = 0  # its worker died: a pending trace past the limit is queued again
    with django_capture_on_commit_callbacks() as queued:
        _request(ckpt, "once more", owner)
    assert len(queued) == 1


def test_the_cache_key_depends_on_weights_and_text_and_the_secret(owner, run, settings):
    a, b = (selectors.source_get(ref=f"checkpoint:{c.pk}", user=owner) for c in run[1][:2])
    assert selectors.trace_key(source=a, text="x") != selectors.trace_key(source=b, text="x")
    assert selectors.trace_key(source=a, text="x") != selectors.trace_key(source=a, text="y")
    key = selectors.trace_key(source=a, text="x")
    settings.SECRET_KEY = "another-secret"
    assert selectors.trace_key(source=a, text="x") != key


def test_the_cache_forgets_the_least_recently_used_traces_first(owner, ckpt):
    from django.utils import timezone

    rows = []
    for k in range(3):
        t = Trace.objects.create(key=f"{k:064x}", source=ckpt, text=str(k), status=Trace.Status.READY, size_bytes=100,
                                 used=timezone.now() - timezone.timedelta(minutes=10 - k))
        t.file.parent.mkdir(parents=True, exist_ok=True)
        t.file.write_bytes(b"x" * 100)
        rows.append(t)
    assert services.trace_cache_prune(max_bytes=250) == 1
    assert not rows[0].file.exists() and rows[1].file.exists()
    assert list(Trace.objects.values_list("text", flat=True).order_by("text")) == ["1", "2"]


def test_token_limit_keeps_traces_small_but_never_below_128_tokens(settings):
    settings.EXPLORER_TRACE_BUDGET_BYTES = 4 * 1024 * 1024
    settings.EXPLORER_MAX_TOKENS = 512
    smollm2 = dict(n_layer=30, n_head=9, block_size=8192)
    assert selectors.token_limit(smollm2) == 175  # 30 x 9 heads x 175 x 176 / 2 bytes = 4.0 MB
    assert selectors.token_limit(dict(n_layer=6, n_head=6, block_size=256)) == 256
    assert selectors.token_limit(dict(n_layer=96, n_head=96, block_size=2048)) == 128
    assert selectors.token_limit(dict(n_layer=2, n_head=2, block_size=4096)) == 512


def test_the_picker_lists_the_latest_checkpoint_of_each_visible_run(owner, run):
    groups = selectors.source_choices(user=owner)
    runs = dict(groups)["Your training runs (latest checkpoint)"]
    assert [s.ref for s in runs] == [f"checkpoint:{run[1][-1].pk}"]
    assert "2 layers × 2 heads" in runs[0].detail
    assert selectors.source_choices(user=AnonymousUser()) == []
    stops = selectors.run_checkpoints(run_id=run[0].pk, user=owner)
    assert [s.step for s in stops] == [0, 100, 200]


def test_published_registry_models_are_everyones_and_drafts_their_owners(owner, run):
    from tests.apps.explorer.factories import registry_model

    published = registry_model(checkpoint=run[1][-1], tokenizer=run[0].tokenizer)
    draft = registry_model(checkpoint=run[1][0], tokenizer=run[0].tokenizer, status="draft", name="tiny-draft")
    draft.owner = owner
    draft.save()
    anon = AnonymousUser()
    assert [s.ref for s in dict(selectors.source_choices(user=anon))["Models"]] == [f"model:{published.pk}"]
    assert selectors.source_default(user=anon).ref == f"model:{published.pk}"
    assert _request(f"model:{published.pk}", "ROMEO", anon).source == f"model:{published.pk}"
    with pytest.raises(SourceNotFound, match="not published"):
        _request(f"model:{draft.pk}", "ROMEO", anon)
    assert _request(f"model:{draft.pk}", "ROMEO", owner).source == f"model:{draft.pk}"
    source = selectors.source_get(ref=f"model:{published.pk}", user=anon)
    assert source.run_id == run[0].pk, "a promoted model keeps its run: the slider can span the run's checkpoints"
    assert selectors.run_checkpoints(run_id=source.run_id, user=anon) == [], "but only for those who may see the run"
