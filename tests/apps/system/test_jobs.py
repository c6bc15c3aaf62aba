"""apps.system: the Job fields and job_request_cancel, shared by every long-job kind (here: a tokenizer)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.system.models import Job, JobStatus
from apps.system.services import JOB_STALE_SECONDS, job_request_cancel
from apps.tokenization.models import Tokenizer

pytestmark = pytest.mark.django_db


def _job(status: str) -> Tokenizer:
    return Tokenizer.objects.create(name=f"t-{status}", kind=Tokenizer.Kind.BPE, status=status)


def test_every_long_job_kind_is_a_job():
    from apps.corpora.models import Shards
    from apps.registry.models import ModelImport

    assert all(issubclass(kind, Job) for kind in (Shards, Tokenizer, ModelImport))
    assert ModelImport.Status is JobStatus and Shards.ACTIVE == JobStatus.active()


def test_a_queued_job_is_cancelled_at_once():
    job, requested = job_request_cancel(Tokenizer, _job(JobStatus.QUEUED).pk)
    assert requested and job.status == JobStatus.CANCELLED and job.finished is not None and job.cancel_requested


def test_a_running_job_is_only_asked_to_stop():
    job, requested = job_request_cancel(Tokenizer, _job(JobStatus.RUNNING).pk)
    assert requested and job.status == JobStatus.RUNNING and job.cancel_requested and job.active


def test_a_running_job_whose_worker_went_silent_is_cancelled_with_the_reason():
    row = _job(JobStatus.RUNNING)
    Tokenizer.objects.filter(pk=row.pk).update(updated=timezone.now() - timedelta(seconds=JOB_STALE_SECONDS + 5))
    job, requested = job_request_cancel(Tokenizer, row.pk)
    assert requested and job.status == JobStatus.CANCELLED and job.error == "its worker stopped reporting"


def test_a_finished_job_is_left_as_it_is():
    row = _job(JobStatus.SUCCEEDED)
    job, requested = job_request_cancel(Tokenizer, row.pk)
    assert not requested and job.status == JobStatus.SUCCEEDED and not job.cancel_requested
