"""The tokenization socket's vocabulary: group names and event types. Spelled here and nowhere else;
apps.system.realtime.publish sends them.

A tokenizer's page listens to its group while it trains; each event carries the job's whole state."""

TRAINING_PROGRESS = "tokenization.training_progress"  # merges done, rate, ETA (every ~0.3 s at most)
TRAINING_STATE = "tokenization.training_state"  # status changed (running, succeeded, failed, cancelled)


def tokenizer_group(tokenizer_id: int) -> str:
    return f"tokenization.tokenizer.{tokenizer_id}"


def training_progress_event(tokenizer: dict) -> dict:
    return {"type": TRAINING_PROGRESS, "tokenizer": tokenizer}


def training_state_event(tokenizer: dict) -> dict:
    return {"type": TRAINING_STATE, "tokenizer": tokenizer}

