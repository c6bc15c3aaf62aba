"""Glue for evaluation: an Evaluation row in, results and an answers file out (workers/gpt/evaluate.py scores).

    evaluation_run(evaluation_id=7)   # what the Celery task `evaluation_run` calls on an infer worker

Loads the model through the infer worker's warm cache (workers/model_cache.py, by LoadSpec: the model generation
and the explorer use stays loaded for them), reads the problems (apps.evals.selectors, the same reading the service
checked the request with), and scores them in batches. After each batch it records progress (published to the
model's and the evaluation's groups) and asks whether to stop: a cancelled job keeps nothing. Every failure is
recorded on the row in words for the page.

- loss: the split's text is encoded with the model's tokenizer and scored with token_loss in chunks of whole
  windows (block_size tokens, overlapping by one), so the sum over chunks equals scoring the whole at once.
- choice: multiple_choice, a few problems a batch; a context that does not fit is cropped from the left (as
  lm-evaluation-harness does) and the notes count them.
- generate: chat models read each prompt as a user turn through their chat template and stop at their stop ids;
  base models read the raw prompt and stop at theirs (end of text). k = 1 answers greedily; k > 1 samples k answers
  per problem at the row's temperature, all of a batch in one KV-cached generate_batch, and pass@k is estimated
  with the unbiased estimator (apps/evals/metrics.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time

from django.conf import settings

from apps.evals import selectors, services
from apps.evals.metrics import generate_summary, proportion
from apps.evals.models import Evaluation
from apps.system import files
from workers.model_cache import model_cache, model_spec

log = logging.getLogger(__name__)

CHOICE_BATCH = 8  # problems between two progress reports
GENERATE_ROWS = 16  # sequences generated together (problems x k)
LOSS_WINDOWS = 8  # block_size windows per chunk


class Cancelled(Exception):
    pass


def evaluation_run(*, evaluation_id: int) -> str:
    """Run one evaluation; returns its final status."""
    evaluation = services.evaluation_start(evaluation_id=evaluation_id, worker=_worker_name())
    if evaluation is None:
        return "skipped"
    try:
        loaded, _warm = model_cache.get(model_spec(evaluation.model))
        progress = Progress(evaluation)
        if evaluation.method == Evaluation.Method.LOSS:
            results, notes, answers = score_loss(evaluation, loaded, progress)
        else:
            problems = selectors.evaluation_problems(evaluation)
            score = score_choice if evaluation.method == Evaluation.Method.CHOICE else score_generate
            results, notes, answers = score(evaluation, loaded, problems, progress)
        answers_path = ""
        if answers:
            path = files.artifact_path("evals", evaluation.pk, "answers.json")
            files.write_json(path, {"evaluation": evaluation.pk, "answers": answers})
            answers_path = files.artifact_relative(path)
        results["seconds"] = round(time.monotonic() - progress.started, 2)
    except Cancelled:
        services.evaluation_mark_cancelled(evaluation_id=evaluation_id)
        return Evaluation.Status.CANCELLED
    except selectors.EvalError as exc:
        services.evaluation_fail(evaluation_id=evaluation_id, error=str(exc))
        return Evaluation.Status.FAILED
    except Exception as exc:  # the page must show why, not spin forever
        log.exception("evaluation %s failed", evaluation_id)
        services.evaluation_fail(evaluation_id=evaluation_id, error=_reason(exc))
        return Evaluation.Status.FAILED
    services.evaluation_finish(evaluation_id=evaluation_id, results=results, notes=notes, answers_path=answers_path)
    return Evaluation.Status.SUCCEEDED


class Progress:
    """Reports done / total after each batch; raises Cancelled when the user asked to stop, TimeoutError past
    EVALS_MAX_SECONDS."""

    def __init__(self, evaluation: Evaluation):
        self.id = evaluation.pk
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        if services.evaluation_record_progress(evaluation_id=self.id, done=done, total=total, elapsed=elapsed):
            raise Cancelled()
        if elapsed > settings.EVALS_MAX_SECONDS:
            raise TimeoutError(f"the evaluation took longer than EVALS_MAX_SECONDS ({settings.EVALS_MAX_SECONDS:.0f} "
                               f"s): ask for fewer problems")


# ----------------------------------------------------------------------------------------------------------------------
# loss


def score_loss(evaluation: Evaluation, loaded, progress: Progress) -> tuple[dict, list, list]:
    import math

    import torch

    from workers.gpt.evaluate import token_loss
    from workers.gpt.tokenizers import TokenizerError

    model, tok = loaded.model, loaded.tokenizer
    corpus = evaluation.corpus
    if corpus is None:
        raise selectors.EvalError("The corpus of this evaluation was deleted.")
    services.evaluation_phase(evaluation_id=evaluation.pk, phase="encoding the text")
    # every tokenizer here gives at most a few tokens per character: 4 n characters hold n tokens
    text = selectors.corpus_split_text(corpus, split=evaluation.split, max_chars=4 * evaluation.n + 1)
    try:
        ids = tok.encode(text)
    except TokenizerError as e:
        raise selectors.EvalError(f"{evaluation.model.name}'s tokenizer cannot encode {corpus.name}: {e}. Score it "
                                  f"on a corpus in the language it was trained on.") from None
    data = torch.tensor(ids[:evaluation.n + 1], dtype=torch.long)
    if data.numel() < 2:
        raise selectors.EvalError(f"The {evaluation.split} split of {corpus.name} has fewer than 2 tokens.")
    T = model.config.block_size
    chunk = T * LOSS_WINDOWS
    total_loss, count = 0.0, 0
    predicted = data.numel() - 1
    for start in range(0, predicted, chunk):
        r = token_loss(model, data[start:start + chunk + 1], batch_size=LOSS_WINDOWS)  # windows overlap by one
        total_loss += r["loss"] * r["n_tokens"]
        count += r["n_tokens"]
        progress(count, predicted)
    mean = total_loss / count
    notes = []
    if count < evaluation.n:
        notes.append(f"The split has {count + 1:,} tokens for this tokenizer, fewer than the {evaluation.n:,} asked "
                     f"for: scored them all.")
    results = {"metric": "loss", "score": mean, "low": None, "high": None, "n": count,
               "metrics": {"loss": mean, "perplexity": math.exp(mean), "bits_per_token": mean / math.log(2)}}
    return results, notes, []


# ----------------------------------------------------------------------------------------------------------------------
# multiple choice


def score_choice(evaluation: Evaluation, loaded, problems: list, progress: Progress) -> tuple[dict, list, list]:
    from workers.gpt.evaluate import encode_pair, multiple_choice

    model, tok = loaded.model, loaded.tokenizer
    T = model.config.block_size
    services.evaluation_phase(evaluation_id=evaluation.pk, phase="scoring the choices")
    rows, cropped = [], 0
    for start in range(0, len(problems), CHOICE_BATCH):
        batch = problems[start:start + CHOICE_BATCH]
        scored = multiple_choice(model, tok, [p.to_dict() for p in batch])["results"]
        for p, r in zip(batch, scored):
            lengths = [sum(map(len, encode_pair(tok, p.context, c))) for c in p.choices]
            crop = max(lengths) > T + 1
            cropped += crop
            rows.append({
                "i": len(rows), "prompt": p.context, "expected": p.choices[p.answer], "answer": p.choices[r["pred"]],
                "correct": r["correct"], "correct_norm": r["correct_norm"], "reward": float(r["correct"]),
                "cropped": crop,
                "choices": [{"text": c, "loglikelihood": ll, "picked": j == r["pred"], "right": j == p.answer}
                            for j, (c, ll) in enumerate(zip(p.choices, r["loglikelihoods"]))],
            })
        progress(len(rows), len(problems))
    n = len(rows)
    acc = proportion(sum(r["correct"] for r in rows), n)
    acc_norm = proportion(sum(r["correct_norm"] for r in rows), n)
    notes = []
    if cropped:
        notes.append(f"{cropped} of {n} contexts were longer than the model's context of {T} tokens and were cropped "
                     f"from the left (as lm-evaluation-harness does).")
    if evaluation.model.chat_template:
        notes.append("Scored on the raw text, without the chat template: log-likelihood of a continuation, as "
                     "lm-evaluation-harness does by default.")
    results = {"metric": "acc", "score": acc["value"], "low": acc["low"], "high": acc["high"], "n": n,
               "metrics": {"acc": acc, "acc_norm": acc_norm}}
    benchmark = selectors.BENCHMARKS.get(evaluation.benchmark)
    if benchmark is not None and benchmark.chance is not None:
        results["chance"] = benchmark.chance
    return results, notes, rows


# ----------------------------------------------------------------------------------------------------------------------
# generate, then check


def score_generate(evaluation: Evaluation, loaded, problems: list, progress: Progress) -> tuple[dict, list, list]:
    import torch

    from workers.gpt.generate import generate_batch
    from workers.gpt.tasks import check

    model, tok = loaded.model, loaded.tokenizer
    row_model = evaluation.model
    stop_ids = {int(s) for s in (row_model.stop_ids or [])}
    k = evaluation.k
    temperature = evaluation.temperature if k > 1 else 0.0
    generator = torch.Generator().manual_seed(evaluation.seed)
    prompts = [selectors.prompt_ids(p, model=row_model, tokenizer=tok) for p in problems]
    per_batch = max(1, GENERATE_ROWS // k)
    services.evaluation_phase(evaluation_id=evaluation.pk, phase=f"answering, {per_batch * k} sequences at a time")
    rows, counts = [], []
    for start in range(0, len(problems), per_batch):
        batch = list(range(start, min(start + per_batch, len(problems))))
        outs = generate_batch(model, [prompts[i] for i in batch for _ in range(k)],
                              max_new_tokens=evaluation.max_new_tokens, temperature=temperature, stop_ids=stop_ids,
                              generator=generator)
        for b, i in enumerate(batch):
            p, answers = problems[i], []
            for ids in outs[b * k:(b + 1) * k]:
                ended = bool(ids) and ids[-1] in stop_ids
                text = tok.decode(ids[:-1] if ended else ids)
                verdict = check(p, text)
                answers.append({"text": text, "correct": verdict.correct, "reward": verdict.reward,
                                "read": verdict.answer, "reason": verdict.reason, "ended": ended,
                                "n_tokens": len(ids)})
            c = sum(a["correct"] for a in answers)
            counts.append(c)
            rows.append({"i": i, "prompt": p.prompt, "expected": p.answer, "answer": answers[0]["text"],
                         "correct": c > 0, "n_correct": c, "k": k,
                         "reward": sum(a["reward"] for a in answers) / k, "answers": answers})
        progress(len(rows), len(problems))
    results = generate_summary(counts, samples=k, k=k)
    ended = sum(a["ended"] for r in rows for a in r["answers"])
    results["metrics"]["ended"] = proportion(ended, len(rows) * k)
    notes = []
    if k > 1:
        notes.append(f"{k} samples per problem at temperature {temperature:g}; pass@1 and pass@{k} by the unbiased "
                     f"estimator of Chen et al. 2021.")
    if row_model.chat_template:
        notes.append("Each prompt was a user turn rendered through the model's chat template.")
    if not stop_ids:
        notes.append("This model has no stop tokens: every answer ran to max_new_tokens.")
    return results, notes, rows


def _reason(exc: Exception) -> str:
    from workers.gpt.tokenizers import TokenizerError

    if isinstance(exc, (TokenizerError, TimeoutError, OSError)):
        return str(exc)
    return f"The worker could not score this: {type(exc).__name__}: {exc}"


def _worker_name() -> str:
    return os.environ.get("CELERY_WORKER_NAME") or f"pid {os.getpid()}@{socket.gethostname()}"
