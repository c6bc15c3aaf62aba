"""The evals socket's vocabulary: group names and event types, spelled here and nowhere else;
apps.system.realtime.publish sends them.

A model's page listens to its model's group, an evaluation's page to the evaluation's group; a job publishes its
whole state to both (small and idempotent: a dropped event is repaired by the next, and every job ends with a
final state event)."""

PROGRESS = "evals.progress"  # a running job's state: problems done, rate, ETA (every ~0.5 s at most)
STATE = "evals.state"  # a job changed status (queued, running, succeeded, failed, cancelled)


def model_group(model_id: int) -> str:
    return f"evals.model.{model_id}"


def evaluation_group(evaluation_id: int) -> str:
    return f"evals.evaluation.{evaluation_id}"


def progress_event(evaluation: dict) -> dict:
    return {"type": PROGRESS, "evaluation": evaluation}


def state_event(evaluation: dict) -> dict:
    return {"type": STATE, "evaluation": evaluation}
