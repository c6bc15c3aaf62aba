import json
import secrets

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from apps.system import realtime
from apps.system.models import Job, JobStatus
from apps.system.redisconn import redis_client

# A running job silent this long may be cancelled at once (its worker is probably gone).
JOB_STALE_SECONDS = 60
# A worker's last heartbeat is kept this long, so a killed worker stays listed as gone for a while before it vanishes.
WORKER_RECORD_TTL_SECONDS = 300


def worker_record_heartbeat(*, status: dict) -> None:
    redis_client().set(realtime.worker_key(status["name"]), json.dumps(status), ex=WORKER_RECORD_TTL_SECONDS)


def worker_record_gone(*, name: str) -> None:
    redis_client().delete(realtime.worker_key(name))


def admin_ensure(*, username: str = "admin") -> str | None:
    """Create the first superuser with a generated password; return the password, or None if a superuser exists."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email="", password=password)
    return password


def job_request_cancel(model: type[Job], pk: int) -> tuple[Job, bool]:
    """Ask a long job's row (any Job: Shards, Tokenizer, ...) to stop; return (row, whether it was still active).

    A queued job, or one whose worker has gone silent for JOB_STALE_SECONDS, is cancelled at once; a running one sees
    cancel_requested at its next batch, removes what it wrote and reports cancelled itself."""
    with transaction.atomic():
        job = model.objects.select_for_update().get(id=pk)
        if job.status not in JobStatus.active():
            return job, False
        stale = (timezone.now() - job.updated).total_seconds() > JOB_STALE_SECONDS
        if job.status == JobStatus.QUEUED or stale:
            job.error = "" if job.status == JobStatus.QUEUED else "its worker stopped reporting"
            job.status = JobStatus.CANCELLED
            job.finished = timezone.now()
        job.cancel_requested = True
        job.save()
    return job, True
