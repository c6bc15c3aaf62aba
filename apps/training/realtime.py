"""The training socket's vocabulary: group names and event types. Spelled here and nowhere else;
apps.system.realtime.publish sends them.

A run's dashboard listens to the run's group. Workers publish small JSON events there, always AFTER the database
holds what they carry, and every event names the steps it covers: a page that loaded its history from the database
and then joined the group can merge both by step number, with no gap and no duplicate. channels-redis drops messages
to a slow page instead of blocking the worker; the page then asks the socket for everything after its last step.
"""

METRICS = "training.metrics"  # a batch of steps and evaluations, with the run's progress (every ~0.2 s while training)
SAMPLE = "training.sample"  # text the model generated at an evaluation
STATUS = "training.status"  # the run changed status, or its timeline got an entry; also the final state
CHECKPOINT = "training.checkpoint"  # a checkpoint was saved (and older ones rotated away)
REWIND = "training.rewind"  # steps after a checkpoint were dropped (the run resumes from it): cut the curve there
PREPARING = "training.preparing"  # the run waits for its corpus to be encoded: how far that is
QUEUE = "training.queue"  # some run entered or left the queue: queued pages recompute their position
SWEEP = "training.sweep"  # a run of a sweep changed status (finished, say): the sweep's page refits and redraws
ROLLOUT = "training.rollout"  # GRPO: the sampled groups of a step (each answer with its reward), for the answers panel


def run_group(run_id: int) -> str:
    return f"training.run.{run_id}"


def sweep_group(sweep_id: int) -> str:
    return f"training.sweep.{sweep_id}"


def sweep_event(sweep_id: int, *, run_id: int, status: str) -> dict:
    return {"type": SWEEP, "sweep": sweep_id, "run": run_id, "status": status}


def queue_group() -> str:
    return "training.queue"


def control_channel(run_id: int) -> str:
    """Redis pub/sub channel on which the web side tells the worker holding a run to stop (cancel)."""
    return f"lab:training:control:{run_id}"


CANCEL = b"cancel"  # the one message sent on a control channel


# Steps and evaluations travel as rows in this field order (compact: a long run sends thousands of them).
# "extra" is a dict of what only some kinds of run measure (grpo: reward, accuracy, reward_std, response_len, kl,
# entropy); last, so rows of the other fields read the same.
METRIC_FIELDS = ("step", "loss", "lr", "grad_norm", "ms", "tokens_per_s", "mfu", "elapsed", "extra")
EVAL_FIELDS = ("step", "train_loss", "val_loss", "elapsed")


def metrics_event(run_id: int, *, steps: list[list], evals: list[list], progress: dict, epoch: int) -> dict:
    return {"type": METRICS, "run": run_id, "steps": steps, "evals": evals, "progress": progress, "epoch": epoch}


def sample_event(run_id: int, *, step: int, text: str) -> dict:
    return {"type": SAMPLE, "run": run_id, "step": step, "text": text}


def status_event(run_id: int, *, status: str, reason: str, step: int, entry: dict | None) -> dict:
    return {"type": STATUS, "run": run_id, "status": status, "reason": reason, "step": step, "entry": entry}


def checkpoint_event(run_id: int, *, step: int) -> dict:
    return {"type": CHECKPOINT, "run": run_id, "step": step}


def rewind_event(run_id: int, *, step: int, epoch: int) -> dict:
    return {"type": REWIND, "run": run_id, "step": step, "epoch": epoch}


def preparing_event(run_id: int, *, progress: float, eta_seconds: float | None) -> dict:
    return {"type": PREPARING, "run": run_id, "progress": progress, "eta_seconds": eta_seconds}


def queue_event() -> dict:
    return {"type": QUEUE}


def rollout_event(run_id: int, *, step: int, groups: list[dict]) -> dict:
    return {"type": ROLLOUT, "run": run_id, "step": step, "groups": groups}
