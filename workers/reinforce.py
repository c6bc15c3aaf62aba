"""The glue between a GRPO Run row (kind "grpo") and the GRPO loop (workers.gpt.grpo): a registry model and a task set
in; checkpoints, per-step metrics, the sampled groups and the before/after held-out accuracy out; the result
registered as `<base>-grpo`.

It runs under the same job machinery as pretraining (workers/training.py's TrainingJob, which it extends): the same
lease and Supervisor (cancel heard at once), the same Recorder (metrics written off the loop's thread), the same
checkpoint rotation, and resume from the last checkpoint, which holds the policy's weights, the AdamW state and the
loop's position in its seeded streams (GRPOState.state_dict()), so a resumed run continues as if never stopped.

What it guarantees, beyond TrainingJob's:
- the prompt is what the model sees in chat: the base model's chat template with the problem as the user's turn
  (or the bare prompt for a model without one); answers end at the model's stop ids;
- the library's guards reach the UI: a run whose rewards stay flat ends (cancelled-like, "stopped") with the
  library's sentence as the run's reason; a NaN reward fails the run with its message; the answers cut at the
  context are counted in every step's metrics;
- held-out pass@1 and pass@k before and after are evaluation jobs of the evals app (apps.training.grpo.heldout_*):
  the base model's is queued with the run, and the registered <base>-grpo's when the run ends, with the same
  settings; heldout_accuracy below is the same measurement in-process, for the benchmark.
"""

from __future__ import annotations

import copy
import json
import logging
import platform
import time

import torch
from django.utils.translation import gettext_noop

from apps.system import files
from apps.training import grpo as grpo_app
from apps.training import lease
from apps.training.models import Run, RunEvent
from workers.gpt import checkpoint as ckpt_lib

from workers.gpt.evaluate import wilson_interval
from workers.gpt.generate import generate_batch
from workers.gpt.grpo import grpo
from workers.gpt.grpo_config import GRPOConfig
from workers.gpt.tasks import check
from workers.gpt.train import resolve_device
from workers.training import TrainingJob, finite
from workers.training_threads import Recorder

log = logging.getLogger(__name__)

EVAL_BATCH = 32  # held-out prompts generated at once
LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "c_gate")  # every Linear but lm_head (often tied to the embedding)
KEEP_CHECKPOINTS = 2
CHECKPOINT_EVERY = 10  # steps
BEFORE_WAIT_SECONDS = 15 * 60  # the longest the first step waits for the "before" evaluation on this machine
BEFORE_QUEUED_SECONDS = 120  # ... and for this machine's infer worker to start it
BEFORE_POLL_SECONDS = 1.0


class RolloutRecorder(Recorder):
    """The Recorder, plus the sampled groups of each step (written after the steps they belong to)."""

    def __init__(self, run_id: int, token: str):
        super().__init__(run_id, token)
        self.rollouts: list[tuple[int, list[dict]]] = []

    def add_rollout(self, step: int, groups: list[dict]) -> None:
        with self.lock:
            self.rollouts.append((step, groups))

    def flush(self) -> None:
        super().flush()
        with self.lock:
            rollouts, self.rollouts = self.rollouts, []
        try:
            if not grpo_app.rollout_record(run_id=self.run_id, token=self.token, rollouts=rollouts):
                self.lost.set()
        except Exception:
            log.warning("run %s: could not record rollouts; trying again", self.run_id, exc_info=True)
            with self.lock:
                self.rollouts[:0] = rollouts


class ReinforceJob(TrainingJob):
    def __init__(self, run: Run, device_info: dict, *, echo=None, stop=None):
        super().__init__(run, device_info, echo=echo, stop=stop)
        self.recorder = RolloutRecorder(run.pk, self.token)
        self.groups: list[dict] = []  # the current step's groups, as on_group reports them

    def work(self) -> str:  # TrainingJob.execute runs it and records how it failed, if it did
        return self.reinforce()

    # -- setting up -------------------------------------------------------------------------------------------------

    def reinforce(self) -> str:
        from apps.corpora.tasksets import taskset_problems
        from apps.tokenization.selectors import tokenizer_from_spec
        from workers.gpt.sft import apply_lora, lora_target_names

        run, tc = self.run, self.run.train_config
        base = run.base_model
        if base is None or run.corpus is None:
            raise ValueError("the run's base model or task set was deleted: start a new run")
        cfg = GRPOConfig.from_dict(dict(tc["grpo"]))
        cfg.validate()
        device = resolve_device("auto")
        model = ckpt_lib.load_model(base.file, device)
        self.tokenizer = tokenizer_from_spec(spec=base.tokenizer_spec)
        self.stop_ids = list(base.stop_ids or [])
        self.base = base
        train_problems = taskset_problems(corpus=run.corpus, split="train")
        reference = copy.deepcopy(model).requires_grad_(False) if cfg.beta > 0 else None
        if tc.get("lora"):
            targets = [t for t in LORA_TARGETS if t in lora_target_names(model)]
            apply_lora(model, target_modules=targets, r=run.lora["r"], alpha=run.lora["alpha"])
        self.model, self.cfg, self.device = model, cfg, device
        resume = self.grpo_resume_point()
        from_step = resume["step"] if resume else 0
        if not lease.run_start(run_id=run.pk, token=self.token, from_step=from_step, resumed=resume is not None):
            return "lost"
        self.run.refresh_from_db()
        if from_step == 0:
            self.wait_for_before()
        self.max_steps = cfg.steps
        self.elapsed_base = self.run.elapsed_seconds
        self.started = time.monotonic()
        self.recorder.start()
        state = grpo(model, train_problems, cfg, encode_prompt=self.encode_prompt, decode=self.decode,
                     stop_ids=self.stop_ids, reference=reference, reward_fn=self.reward, on_step=self.on_grpo_step,
                     on_group=self.groups.append, on_state=self.on_state, should_stop=self.should_stop,
                     resume=resume)
        return self.grpo_finish(state)

    def wait_for_before(self) -> None:
        """Let the held-out "before" evaluation finish first when it runs on this machine. The two would share its
        cores: on 2 CPU cores, side by side, GRPO steps took 118 s instead of 8.4 s and the evaluation 23 min instead
        of 1-2. Not waited for: an evaluation on another machine, one that has gone silent, one still queued with
        no live infer worker here to take it (or none taking it within BEFORE_QUEUED_SECONDS), or for longer than
        BEFORE_WAIT_SECONDS. Cancel is heard while waiting."""
        from django.utils import timezone

        from apps.evals.models import Evaluation
        from apps.system.services import JOB_STALE_SECONDS

        before_id = (self.run.data.get("heldout") or {}).get("before")
        host, started, noted = platform.node(), time.monotonic(), False
        while before_id and not self.supervisor.stop_requested():
            e = Evaluation.objects.filter(pk=before_id).only("status", "worker", "updated").first()
            waited = time.monotonic() - started
            if e is None or not e.active or waited > BEFORE_WAIT_SECONDS:
                break
            if e.status == Evaluation.Status.RUNNING:
                here = e.worker.rpartition("@")[2] == host
                if not here or (timezone.now() - e.updated).total_seconds() > JOB_STALE_SECONDS:
                    break
            elif waited > BEFORE_QUEUED_SECONDS or not _infer_worker_on(host):
                break
            if not noted:
                lease.run_note(run_id=self.run.pk, token=self.token, message=gettext_noop(
                    "Waiting for evaluation #%(id)s (held-out accuracy before training) to finish: it runs on this "
                    "machine, and the two would share its cores."), params={"id": before_id})
                noted = True
            time.sleep(BEFORE_POLL_SECONDS)
        if noted:
            lease.run_note(run_id=self.run.pk, token=self.token, message=gettext_noop(
                "Training starts (waited %(s)s s)."), params={"s": round(time.monotonic() - started)})

    def encode_prompt(self, problem) -> list[int]:
        from apps.evals.selectors import prompt_ids

        return prompt_ids(problem, model=self.base, tokenizer=self.tokenizer)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.stop_ids])

    def reward(self, problem, text):
        return check(problem, text, format_reward=self.cfg.format_reward)

    def grpo_resume_point(self) -> dict | None:
        """The latest checkpoint's weights loaded into the policy, and its GRPO state; None to start fresh."""
        found = []
        for path in ckpt_lib.list_checkpoints(self.directory):
            try:
                meta = json.loads(path.with_suffix(".json").read_text())
            except (OSError, ValueError):
                continue
            found.append((meta["step"], files.artifact_relative(path), {}))
        lease.run_sync_checkpoints(run=self.run, found=found)
        if not found:
            lease.run_rewind(run_id=self.run.pk, token=self.token, step=0)
            return None
        ckpt = ckpt_lib.load_checkpoint(files.artifact_path(found[-1][1]), self.device)
        self.model.load_state_dict(ckpt.model_state)
        state = dict(ckpt.extra["grpo_state"]) | {"optimizer": ckpt.optimizer_state}
        lease.run_rewind(run_id=self.run.pk, token=self.token, step=ckpt.step)
        self.last_checkpoint_step = ckpt.step
        return state

    # -- callbacks from the loop ------------------------------------------------------------------------------------

    def on_grpo_step(self, r: dict) -> None:
        now = time.monotonic()
        step = r["step"]
        elapsed = self.elapsed(now)
        self.window.append((step, now))
        extra = {"reward": finite(r["reward_mean"]), "accuracy": finite(r["accuracy"]),
                 "reward_std": finite(r["reward_std"]), "response_len": finite(r["response_length"]),
                 "kl": finite(r["kl"]), "entropy": finite(r["entropy"]), "truncated": r["truncated"],
                 "clip_ratio": finite(r["clip_ratio"]), "flat_groups": r["flat_groups"]}
        tps = finite(r["sample_tokens_per_s"]) or 0.0
        row = [step, finite(r["loss"]), r["lr"], finite(r["grad_norm"]), r["ms"], tps, None, elapsed, extra]
        latest = {"loss": finite(r["loss"]), "lr": r["lr"], "grad_norm": finite(r["grad_norm"]), "ms": r["ms"],
                  "tokens_per_s": tps, "sample_tokens_per_s": tps, "mfu": None, "eta_seconds": self.eta(step),
                  **extra}
        self.recorder.add_step(row, {"status": Run.Status.RUNNING, "step": step, "max_steps": self.max_steps,
                                     "elapsed": elapsed, "eta_seconds": latest["eta_seconds"], "latest": latest,
                                     "best_val_loss": None})
        self.recorder.add_rollout(step, self.groups[:])
        self.groups.clear()
        if self.echo:
            self.echo(f"step {step}: reward {r['reward_mean']:.3f}, accuracy {r['accuracy']:.2f}, length "
                      f"{r['response_length']:.1f}, {r['ms']:.0f} ms")

    def on_state(self, state) -> None:
        if state.step % CHECKPOINT_EVERY == 0 or state.step == self.cfg.steps:
            self.save_checkpoint(state)

    def should_stop(self) -> bool:
        from django.conf import settings

        if time.monotonic() - self.started > settings.TRAINING_MAX_SECONDS:
            self.over_time = True
        return bool(self.supervisor.stop_requested() or self.recorder.lost.is_set() or self.checkpoint_error
                    or self.over_time)

    # -- checkpoints, evaluation, the end ---------------------------------------------------------------------------

    def save_checkpoint(self, state) -> bool:
        """A GRPO checkpoint: LoRA-aware weights, the optimizer and the loop's own state (TrainingJob.save_on_stop
        calls it too)."""
        try:
            path = ckpt_lib.save_checkpoint(
                self.directory, model=self.model, step=state.step, optimizer=state.optimizer,
                tokenizer=self.run.base_model.tokenizer_spec if self.run.base_model else None,
                extra={"run_id": self.run.pk, "grpo_state": {k: v for k, v in state.state_dict().items()
                                                              if k != "optimizer"}})
        except OSError as exc:
            self.checkpoint_error = (f"could not save the checkpoint at step {state.step} in {self.directory}: "
                                     f"{exc.strerror or exc}. Free some disk space, then resume the run.")
            return False
        removed = ckpt_lib.rotate_checkpoints(self.directory, KEEP_CHECKPOINTS, best_by_val=False)
        self.last_checkpoint_step = state.step
        lease.run_record_checkpoint(run_id=self.run.pk, token=self.token, step=state.step,
                                    path=files.artifact_relative(path), train_loss=None, val_loss=None,
                                    size_bytes=path.stat().st_size,
                                    removed=[files.artifact_relative(p) for p in removed])
        return True

    def grpo_finish(self, state) -> str:
        self.recorder.close()
        if self.supervisor.lost.is_set() or self.recorder.lost.is_set():
            return "lost: another worker holds the run now"
        if self.checkpoint_error:
            self.fail(self.checkpoint_error)
            return "failed: checkpoint"
        if state.stopped and state.stop_reason:  # the flat-reward guard: the library's sentence is the reason
            self.save_on_stop(state)
            lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.FAILED,
                             reason=state.stop_reason)
            return "stopped: flat rewards"
        if not state.stopped:
            reason = self.register(state)
            lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.SUCCEEDED, reason=reason)
            return "succeeded"
        return self.finish_stopped(state, self.save_on_stop(state))

    def register(self, state) -> str:
        """Merge LoRA into the weights and register the result as `<base>-grpo` (a draft of the run's owner)."""
        from apps.registry.services import model_copy_tokenizer_files, model_register_derived
        from workers.gpt.sft import merge_lora

        if self.run.train_config.get("lora"):
            merge_lora(self.model)
        directory = files.temp_dir(files.artifact_path("models"), "grpo")
        path = ckpt_lib.save_checkpoint(directory, model=self.model, step=state.step,
                                        tokenizer=self.run.base_model.tokenizer_spec,
                                        extra={"grpo_run": self.run.pk})
        model_copy_tokenizer_files(base=self.run.base_model, into=directory)
        model = model_register_derived(run=self.run, weights_dir=directory, weights_name=path.name, suffix="grpo",
                                       step=state.step)
        lease.run_note(run_id=self.run.pk, token=self.token, kind=RunEvent.Kind.GOOD, message=gettext_noop(
            "Registered as %(model)s (a draft: publish it from the registry)."), params={"model": model.name})
        grpo_app.heldout_after(run_id=self.run.pk, token=self.token, model=model)
        return f"registered as {model.name}"


def _infer_worker_on(host: str) -> bool:
    """Whether a live worker on this machine listens to the infer queue (where evaluations run)."""
    from redis.exceptions import RedisError

    from apps.system.selectors import worker_list

    try:
        workers = worker_list()
    except (RedisError, OSError):  # no Redis: no heartbeats to go by, so nothing to wait for
        return False
    return any(w["state"] == "live" and w.get("host") == host and "infer" in w.get("queues", ()) for w in workers)


@torch.no_grad()
def heldout_accuracy(model, problems, *, encode_prompt, decode, stop_ids, max_new_tokens: int, k: int = 1,
                     temperature: float = 1.0, top_k=None, top_p=None, seed: int = 0) -> dict:
    """pass@1 (one greedy answer per problem, with its 95 % Wilson interval) and pass@k (some of k samples at
    `temperature` right) on `problems`, generated EVAL_BATCH prompts at a time with the batched KV cache.
    Returns {"n", "k", "pass1", "pass1_low", "pass1_high", "passk"}."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    greedy_right, any_right = 0, 0
    try:
        for i in range(0, len(problems), EVAL_BATCH):
            chunk = problems[i:i + EVAL_BATCH]
            prompts = [encode_prompt(p) for p in chunk]
            greedy = generate_batch(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=stop_ids)
            greedy_right += sum(check(p, decode(c)).correct for p, c in zip(chunk, greedy))
            if k > 1:
                sampled = generate_batch(model, [ids for ids in prompts for _ in range(k)],
                                         max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                         top_p=top_p, stop_ids=stop_ids, generator=gen)
                any_right += sum(any(check(p, decode(c)).correct for c in sampled[j * k:(j + 1) * k])
                                 for j, p in enumerate(chunk))
    finally:
        model.train(was_training)
    n = len(problems)
    low, high = wilson_interval(greedy_right, n)
    return {"n": n, "k": k, "pass1": greedy_right / n if n else 0.0, "pass1_low": low, "pass1_high": high,
            "passk": (any_right / n if n else 0.0) if k > 1 else (greedy_right / n if n else 0.0)}
