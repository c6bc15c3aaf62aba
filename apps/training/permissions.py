"""Who may do what to a run: predicates that services (writes) and selectors (reads) both ask."""

from apps.training.models import Run


def run_may_control(*, run: Run, user) -> bool:
    """Cancel, resume, fork: the run's owner, or staff."""
    return user is not None and user.is_authenticated and (user.is_staff or run.owner_id == user.id)


def run_may_view(*, run: Run, user) -> bool:
    return run_may_control(run=run, user=user)
