"""The glue between a training Run row and the training loop (workers.gpt.train): rows in, checkpoints and metrics
out, events published.

    train_run(run_id)  claims the run (a lease in the database), waits for its data (the corpus encoded with the
                       tokenizer), resumes from its last checkpoint if it has one, calls train() with callbacks, and
                       records how it ended. The Celery task run_train and `manage.py train` both call it.

Three threads work for a run: the training loop (this thread) and the two of workers/training_threads.py, a
Supervisor (renews the lease, hears "cancel" on Redis at once, notices when the lease was lost) and a Recorder
(every FLUSH_SECONDS writes the buffered steps to the database, then publishes them), so the loop never waits on the
database or the network. The device's peak FLOP/s comes from workers/devices.py, measured once per process.

Why one file of about 460 lines: it is one idea, TrainingJob, the life of a run on a worker (prepare, train, record,
end), and its methods share one state (the run, its lease token, the supervisor and recorder, the last checkpoint).
It is also the surface the other kinds override (workers/finetune.py, workers/reinforce.py replace a hook each:
load_data, loop_inputs, save_checkpoint, finish), so splitting the class across modules would scatter that surface.
What is not the job already lives apart: the threads (training_threads.py), the devices (devices.py), the process
group (distributed.py).
"""

import json
import logging
import math
import os
import statistics
import threading
import time
from collections import deque

import torch
from django.conf import settings
from django.db import close_old_connections
from django.utils.translation import gettext_noop

from apps.system import files
from apps.system.devices import device_peak_flops, device_profile_record
from apps.training import lease, sources
from apps.training.models import Run, RunEvent, run_dir
from workers import distributed
from workers.devices import describe_device, peak_flops
from workers.gpt import checkpoint as ckpt_lib
from workers.gpt.config import ConfigError, GPTConfig, TrainConfig, flops_per_token, memory_fit_error, param_count
from workers.gpt.config import devices_fit_error, split_fit_error
from workers.gpt.data import open_tokens, unigram_loss
from workers.gpt.generate import generate
from workers.gpt.train import resolve_device, train
from workers.training_threads import Recorder, Supervisor

log = logging.getLogger(__name__)

SAMPLE_TOKENS = 200  # generated at every evaluation
SAMPLE_TEMPERATURE = 0.8
DATA_POLL_SECONDS = 1.0
ENCODE_HERE_AFTER = 10.0  # no infer worker started the encoding job within this: the train worker encodes itself
PROFILE_MIN_STEP_FLOPS = 1e9  # runs this heavy per step teach the device profile its typical MFU
COMPILE_CACHE = "cache/torch-compile"  # under ARTIFACTS_DIR: torch.compile's kernels, so a second run starts warm


class Stopped(Exception):
    """The run must stop before training began: `why` is cancel, lost, or shutdown."""

    def __init__(self, why: str):
        super().__init__(why)
        self.why = why


def train_run(run_id: int, *, worker: str, task_id: str = "", echo=None, stop: threading.Event | None = None) -> str:
    """Train run `run_id` here. Returns what happened, in a word or two (the task's result).

    echo(line) prints nanoGPT-style progress (manage.py train); setting `stop` cancels like the Cancel button.
    """
    close_old_connections()
    device_info = describe_device()
    run = lease.run_claim(run_id=run_id, worker=worker, device=device_info, task_id=task_id)
    if run is None:
        return "skipped: finished, cancelled, or held by another worker"
    if run.kind not in JOBS:
        lease.run_finish(run_id=run.pk, token=run.lease_token, status=Run.Status.FAILED,
                         reason=f"this worker cannot train runs of kind {run.kind!r}: update the train workers")
        return "failed"
    return JOBS[run.kind]()(run, device_info, echo=echo, stop=stop).execute()


def _reinforce_job():
    from workers.reinforce import ReinforceJob

    return ReinforceJob


def _finetune_job():
    from workers.finetune import FinetuneJob

    return FinetuneJob


# run.kind -> the job that trains it (imported when first needed: each kind's glue brings its own libraries); each
# kind changes only what goes into the same train() loop or, for grpo, which loop the same job machinery drives
JOBS = {
    "pretrain": lambda: TrainingJob,
    "sft": _finetune_job,
    "grpo": _reinforce_job,
}


def use_compile_cache() -> None:
    """Keep torch.compile's caches (Inductor's generated code, Triton's compiled kernels) under ARTIFACTS_DIR instead
    of /tmp, so they survive a reboot and the next run of the same shape compiles from the cache. Read by torch when
    it first compiles; a value set in the environment by the operator wins."""
    root = files.artifact_path(COMPILE_CACHE)
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
    os.environ.setdefault("TRITON_CACHE_DIR", str(root / "triton"))


# ----------------------------------------------------------------------------------------------------------------------
# the job


class TrainingJob:
    def __init__(self, run: Run, device_info: dict, *, echo=None, stop=None):
        self.run = run
        self.token = run.lease_token
        self.device_info = device_info
        self.echo = echo
        self.supervisor = Supervisor(run.pk, self.token, external_stop=stop)
        self.recorder = Recorder(run.pk, self.token)
        self.directory = files.artifact_path(run_dir(run.pk))
        self.diverged: dict | None = None  # the step where the loss stopped being finite
        self.checkpoint_error: str | None = None
        self.over_time = False
        self.last_eval_step: int | None = None
        self.last_checkpoint_step: int | None = None
        self.resume_path: str | None = None  # the checkpoint file resumed from, for the other ranks
        self.mfus: deque = deque(maxlen=200)
        self.window: deque = deque(maxlen=100)  # (step, monotonic time): the recent speed, evaluations included

    # -- the whole life -------------------------------------------------------------------------------------------

    def execute(self) -> str:
        """The whole life, for every kind: the supervisor runs while work() does, and whatever work() raises ends the
        run with a reason the run page shows."""
        self.supervisor.start()
        try:
            return self.work()
        except distributed.GroupFailed as exc:  # a rank died: resume from the checkpoint; no rendezvous: say so
            self.recorder.close()
            if exc.requeue and lease.run_requeue(run_id=self.run.pk, token=self.token, message=str(exc)):
                return "requeued: a rank stopped"
            self.fail(str(exc))
            return "failed: process group"
        except (ConfigError, ValueError, OSError) as exc:  # the message is for the user: it says what to change
            self.recorder.close()
            self.fail(str(exc))
            return "failed"
        except Exception as exc:
            log.exception("run %s failed", self.run.pk)
            self.recorder.close()
            self.fail(f"{type(exc).__name__}: {exc}")
            return "failed"
        finally:
            self.recorder.close()
            self.supervisor.close()
            close_old_connections()

    def work(self) -> str:
        """Prepare (data, configs, fit checks, the checkpoint to resume), train, finish. Returns the task's result."""
        try:
            train_data, val_data = self.load_data()
            model_cfg = GPTConfig.from_dict(dict(self.run.model_config))
            train_cfg = TrainConfig.from_dict(dict(self.run.train_config))
            device = resolve_device(train_cfg.device)
            self.check_fits(model_cfg, train_cfg, train_data, val_data, device)
            resume = self.resume_point(model_cfg)
        except Stopped as stopped:
            return self.stopped_early(stopped.why)
        return self.train(model_cfg, train_cfg, train_data, val_data, device, resume)

    def train(self, model_cfg, train_cfg, train_data, val_data, device, resume) -> str:
        from_step = resume.step if resume is not None else 0
        if not lease.run_start(run_id=self.run.pk, token=self.token, from_step=from_step,
                                  resumed=resume is not None):
            return "lost"
        self.run.refresh_from_db()
        self.fpt = flops_per_token(model_cfg)
        self.tokens_per_step = train_cfg.batch_size * train_cfg.grad_accum * model_cfg.block_size
        measured = peak_flops(torch.device(device).type)  # once per process (workers.devices)
        device_profile_record(device=self.device_info, peak_flops=measured)
        self.peak = device_peak_flops(device=self.device_info) or measured  # the best seen on this device
        self.max_steps = train_cfg.max_steps
        self.best_val = self.run.best_val_loss
        self.elapsed_base = self.run.elapsed_seconds
        self.started = time.monotonic()
        self.tokenizer = self.runtime_tokenizer()
        self.sample_seed = train_cfg.seed
        self.recorder.start()
        if self.echo:
            self.echo(f"run #{self.run.pk} on {device}: {param_count(model_cfg) / 1e6:.2f}M parameters, "
                      f"{self.tokens_per_step:,} tokens per step, steps {from_step}..{train_cfg.max_steps}")

        if train_cfg.compile:
            use_compile_cache()
        extra = self.loop_inputs(model_cfg, device)
        if extra and train_cfg.devices > 1:
            raise ConfigError(f"devices: a {self.run.kind} run trains on one device (several devices are for "
                              f"pretraining runs); set devices to 1")
        spec = {} if extra else {
            "model_config": model_cfg.to_dict(), "train_config": train_cfg.to_dict(), "resume": self.resume_path,
            "train": str(train_data.filename), "val": str(val_data.filename),
            "artifacts_dir": str(files.artifact_path())}
        with distributed.process_group(devices=train_cfg.devices, spec=spec, kind=torch.device(device).type,
                                       timeout=settings.TRAINING_RDZV_TIMEOUT, endpoint=settings.TRAINING_RDZV_ENDPOINT,
                                       nnodes=settings.TRAINING_NNODES, device_ids=train_cfg.device_list()) as ddp:
            state = train(model_cfg, train_cfg, train_data, val_data, peak_flops=self.peak, on_step=self.on_step,
                          on_eval=self.on_eval, on_checkpoint=self.on_checkpoint, should_stop=self.should_stop,
                          resume=resume, ddp=ddp, **extra)
        self.recorder.close()  # everything recorded before the final state
        return self.finish(state)

    def runtime_tokenizer(self):
        """The tokenizer samples are decoded with."""
        return sources.tokenizer_runtime(tokenizer_id=self.run.tokenizer_id)

    def loop_inputs(self, model_cfg, device) -> dict:
        """What a kind of run adds to train()'s arguments (model=, batch_fn=): pretraining builds GPT(model_cfg)."""
        return {}

    def finish(self, state) -> str:
        s = self.supervisor
        if s.lost.is_set() or self.recorder.lost.is_set():
            return "lost: another worker holds the run now"
        if self.diverged:
            d = self.diverged
            where = (f"its last good checkpoint is step {self.last_checkpoint_step}"
                     if self.last_checkpoint_step is not None else "it saved no checkpoint before")
            self.fail(f"the loss became {d['loss']} at step {d['step']} (learning rate {d['lr']:.3g}, gradient norm "
                      f"{d['grad_norm']}): training diverged and stopped; {where}. Fork that checkpoint with a lower "
                      f"learning_rate, or use a smaller grad_clip.")
            return "failed: diverged"
        if self.checkpoint_error:
            self.fail(self.checkpoint_error)
            return "failed: checkpoint"
        if not state.stopped:
            if self.fpt * self.tokens_per_step >= PROFILE_MIN_STEP_FLOPS and self.mfus:
                # tiny models spend their steps on overhead, not math: their MFU would mislead the estimates
                device_profile_record(device=self.device_info, mfu=statistics.median(self.mfus))
            best = f"best val loss {state.best_val_loss:.4f}" if state.best_val_loss is not None else ""
            lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.SUCCEEDED, reason=best)
            return "succeeded"
        return self.finish_stopped(state, self.save_on_stop(state))

    def finish_stopped(self, state, saved: str) -> str:
        """How a run that stopped before its last step ends (every kind: pretrain, sft, grpo): cancelled by its owner
        (it can be resumed), over TRAINING_MAX_SECONDS (failed), or its worker shutting down (back to the queue, to
        continue on the next free worker). `saved` says what became of its last checkpoint, for the message."""
        if self.supervisor.cancelled.is_set():
            lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.CANCELLED,
                             reason=f"{saved}; Resume continues from there" if state.step else saved)
            return "cancelled"
        if self.over_time:
            self.fail(f"the run trained for longer than TRAINING_MAX_SECONDS ({settings.TRAINING_MAX_SECONDS:.0f} "
                      f"s) and was stopped at step {state.step}; {saved}")
            return "failed: time limit"
        lease.run_requeue(run_id=self.run.pk, token=self.token, message=gettext_noop(
            "Worker %(worker)s is shutting down: stopped at step %(step)s, %(saved)s; the run continues on the next "
            "free worker."), params={"worker": self.run.worker, "step": state.step, "saved": saved})
        return "requeued: worker shutting down"

    def stopped_early(self, why: str) -> str:
        if why == "cancel":
            lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.CANCELLED,
                                reason="before training began")
            return "cancelled"
        if why == "shutdown":
            lease.run_requeue(run_id=self.run.pk, token=self.token, message=gettext_noop(
                "Worker %(worker)s is shutting down before training began: the run waits for the next free worker."),
                params={"worker": self.run.worker})
            return "requeued: worker shutting down"
        return "lost: another worker holds the run now"

    def fail(self, reason: str) -> None:
        lease.run_finish(run_id=self.run.pk, token=self.token, status=Run.Status.FAILED, reason=reason)

    # -- before training ------------------------------------------------------------------------------------------

    def load_data(self):
        """The run's train and val token arrays; waits (status preparing) while the corpus is being encoded. The
        encoding is ensured once (a write: it may queue the job), then only read."""
        run = self.run
        waited_since = time.monotonic()
        state = sources.data_prepare(corpus_id=run.corpus_id, tokenizer_id=run.tokenizer_id, user=run.owner)
        said = False
        while state.status != "ready":
            if state.status == "failed":
                raise ValueError(f"the data could not be prepared: {state.message}")
            if not said:
                said = True
                lease.run_note(run_id=run.pk, token=self.token, message=gettext_noop(
                    "Waiting for %(corpus)s to be encoded with %(tokenizer)s (a job on the infer queue; its progress "
                    "shows on the Data page)."),
                    params={"corpus": run.data.get("corpus"), "tokenizer": run.data.get("tokenizer")})
            self.recorder.publish_preparing(state)
            if state.progress == 0 and time.monotonic() - waited_since > ENCODE_HERE_AFTER:
                self.encode_here(state.shards_id)
            elif self.supervisor.wait_stop(DATA_POLL_SECONDS):
                raise Stopped(self.supervisor.why())
            state = sources.data_state(shards_id=state.shards_id)
        files = sources.data_files(shards_id=state.shards_id)
        if said:
            lease.run_note(run_id=run.pk, token=self.token, kind=RunEvent.Kind.GOOD, message=gettext_noop(
                "Data ready: %(train)s training and %(val)s validation tokens."),
                params={"train": f"{files.n_train_tokens:,}", "val": f"{files.n_val_tokens:,}"})
        train, val = open_tokens(files.train), open_tokens(files.val)
        if "baselines" not in run.data:  # what the run page judges checkpoints against (a few ms of numpy)
            lease.run_record_baselines(run_id=run.pk, token=self.token, baselines={
                "unigram": unigram_loss(train, val, int(run.model_config["vocab_size"]))})
        return train, val

    def encode_here(self, shards_id: int) -> None:
        """Nobody took the encoding job: do it in this process (it refuses if an infer worker started it since)."""
        from workers.corpora import corpus_encode

        lease.run_note(run_id=self.run.pk, token=self.token, message=gettext_noop(
            "No infer worker started the encoding within %(s)s s: encoding on this worker."),
            params={"s": round(ENCODE_HERE_AFTER)})
        corpus_encode(shards_id=shards_id)

    def check_fits(self, model_cfg: GPTConfig, train_cfg: TrainConfig, train_data, val_data, device: str) -> None:
        """Refuse, with the field to change, what would crash or be meaningless once training started: the same
        checks and words as the submit form's (workers.gpt.config), now with the real token counts and device."""
        of = f"of {self.run.data.get('corpus')} with {self.run.data.get('tokenizer')}"
        problem = split_fit_error(model_cfg.block_size, {"validation": len(val_data), "training": len(train_data)},
                                  of=of)
        problem = problem or memory_fit_error(model_cfg, train_cfg, memory_bytes=self.device_info.get("memory_bytes"),
                                              device=f"the device of {self.run.worker}")
        problem = problem or devices_fit_error(train_cfg, self.device_info | {"kind": torch.device(device).type},
                                               where=f"this worker ({self.run.worker})")
        if problem is not None:
            raise problem

    def resume_point(self, model_cfg: GPTConfig):
        """The run's latest checkpoint on disk (rows brought in line with the files), or None to start fresh. Steps
        recorded after it are dropped: they are trained again."""
        found = []
        for path in ckpt_lib.list_checkpoints(self.directory):
            try:
                meta = json.loads(path.with_suffix(".json").read_text())
            except (OSError, ValueError):
                continue
            found.append((meta["step"], files.artifact_relative(path), meta.get("losses") or {}))
        lease.run_sync_checkpoints(run=self.run, found=found)
        if not found:
            lease.run_rewind(run_id=self.run.pk, token=self.token, step=0)
            return None
        self.resume_path = str(files.artifact_path(found[-1][1]))
        ckpt = ckpt_lib.load_checkpoint(self.resume_path, "cpu")
        if ckpt.model_cfg != model_cfg:
            raise ValueError(f"the checkpoint at step {ckpt.step} was trained with another model config: start a "
                             f"new run")
        lease.run_rewind(run_id=self.run.pk, token=self.token, step=ckpt.step)
        self.last_checkpoint_step = ckpt.step
        return ckpt

    # -- callbacks from the loop ----------------------------------------------------------------------------------

    def on_step(self, r: dict) -> None:
        now = time.monotonic()
        step = r["step"]
        loss, grad_norm = finite(r["loss"]), finite(r["grad_norm"])
        if loss is None and self.diverged is None:
            self.diverged = {"step": step, "loss": _word(r["loss"]), "lr": r["lr"], "grad_norm": _word(r["grad_norm"])}
        mfu = finite(r["mfu"])  # train() computes it against self.peak, the one peak this job uses
        if mfu is not None:
            self.mfus.append(mfu)
        elapsed = self.elapsed(now)
        self.window.append((step, now))
        row = [step, loss, r["lr"], grad_norm, r["ms"], r["tokens_per_s"], mfu, elapsed]
        latest = {"loss": loss, "lr": r["lr"], "grad_norm": grad_norm, "ms": r["ms"],
                  "tokens_per_s": r["tokens_per_s"], "mfu": mfu, "eta_seconds": self.eta(step)}
        self.recorder.add_step(row, {"status": Run.Status.RUNNING, "step": step, "max_steps": self.max_steps,
                                     "elapsed": elapsed, "eta_seconds": latest["eta_seconds"], "latest": latest,
                                     "best_val_loss": self.best_val})
        if self.echo and (step % 10 == 0 or step == 1):
            self.echo(f"step {step}: loss {r['loss']:.4f}, lr {r['lr']:.2e}, time {r['ms']:.1f} ms, "
                      f"{r['tokens_per_s']:,.0f} tok/s" + (f", mfu {100 * mfu:.1f}%" if mfu is not None else ""))

    def on_eval(self, r: dict, state) -> None:
        train_loss, val_loss = finite(r["train_loss"]), finite(r["val_loss"])
        if val_loss is not None and (self.best_val is None or val_loss < self.best_val):
            self.best_val = val_loss
        self.last_eval_step = r["step"]
        self.recorder.add_eval([r["step"], train_loss, val_loss, self.elapsed(time.monotonic())], self.best_val)
        if self.echo:
            self.echo(f"step {r['step']}: train loss {r['train_loss']:.4f}, val loss {r['val_loss']:.4f}")
        if not self.diverged:
            self.sample(state.model, r["step"])

    def on_checkpoint(self, state) -> None:
        if self.diverged:
            return  # never save weights that are NaN: the last good checkpoint stays the latest
        self.save_checkpoint(state)

    def should_stop(self) -> bool:
        if time.monotonic() - self.started > settings.TRAINING_MAX_SECONDS:
            self.over_time = True
        return bool(self.supervisor.stop_requested() or self.recorder.lost.is_set() or self.diverged
                    or self.checkpoint_error or self.over_time)

    # -- checkpoints, samples, timing ------------------------------------------------------------------------------

    def save_checkpoint(self, state) -> bool:
        try:
            path = ckpt_lib.save_train_state(
                self.directory, state, tokenizer={"id": self.run.tokenizer_id, "name": self.run.data.get("tokenizer")},
                extra={"run_id": self.run.pk, "corpus": self.run.data.get("corpus")})
        except OSError as exc:
            stray = ckpt_lib.checkpoint_path(self.directory, state.step)
            if not stray.with_suffix(".json").exists():
                stray.unlink(missing_ok=True)  # weights without their sidecar are no checkpoint: free the space
            kept = (f"the checkpoint at step {self.last_checkpoint_step} is intact"
                    if self.last_checkpoint_step is not None else "no earlier checkpoint exists")
            self.checkpoint_error = (f"could not save the checkpoint at step {state.step} in {self.directory}: "
                                     f"{exc.strerror or exc}; {kept}. Free some disk space, then resume the run.")
            return False
        removed = ckpt_lib.rotate_checkpoints(self.directory, state.train_cfg.keep_last)
        rel = files.artifact_relative(path)
        self.last_checkpoint_step = state.step
        evaluated = self.last_eval_step == state.step  # else the losses are an earlier evaluation's
        lease.run_record_checkpoint(
            run_id=self.run.pk, token=self.token, step=state.step, path=rel,
            train_loss=finite(state.train_loss) if evaluated else None,
            val_loss=finite(state.val_loss) if evaluated else None, size_bytes=path.stat().st_size,
            removed=[files.artifact_relative(p) for p in removed])
        return True

    def save_on_stop(self, state) -> str:
        """Checkpoint where a stopped run is, so resuming loses nothing. Returns words for the timeline."""
        if state.step == self.last_checkpoint_step:
            return f"its checkpoint at step {state.step} is kept"
        if state.step == 0:
            return "no step was trained"
        if self.save_checkpoint(state):
            return f"a checkpoint was saved at step {state.step}"
        reason, self.checkpoint_error = self.checkpoint_error, None
        return reason

    def sample(self, model, step: int) -> None:
        try:
            prompt = self.tokenizer.encode("\n") or [0]
            ids = [t.id for t in generate(model, prompt, max_new_tokens=SAMPLE_TOKENS, temperature=SAMPLE_TEMPERATURE,
                                          top_k=200, seed=self.sample_seed + step)]
            text = self.tokenizer.decode(ids)
        except Exception as exc:  # a sample is a nicety: never let it end a run
            log.warning("run %s: no sample at step %s: %s", self.run.pk, step, exc)
            return
        self.recorder.add_sample(step, text)
        if self.echo:
            self.echo(f"--- sample at step {step} ---\n{text}\n---")

    def elapsed(self, now: float) -> float:
        return self.elapsed_base + (now - self.started)

    def eta(self, step: int) -> float | None:
        if len(self.window) < 5:
            return None
        (s0, t0), (s1, t1) = self.window[0], self.window[-1]
        if s1 <= s0 or t1 <= t0:
            return None
        return (self.max_steps - step) * (t1 - t0) / (s1 - s0)


# ----------------------------------------------------------------------------------------------------------------------
# helpers


def finite(x) -> float | None:
    """A float for JSON and the database; None for NaN and infinities (JSON has neither)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _word(x) -> str:
    x = float(x)
    return "NaN" if math.isnan(x) else ("infinite" if math.isinf(x) else f"{x:.4g}")
