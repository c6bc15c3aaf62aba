"""The CPU sweep preset through the real path: sweep_create queues its runs, one real train worker trains them one
after another, and the sweep's own selector fits them. Prints every run's final validation loss, the iso-FLOP
minima, the fitted exponents with their standard errors beside Chinchilla's, the tokens/param at the optimum, the
prediction for the next budget, and the total wall time (target: 20 minutes on two idle CPU cores; a loaded machine
takes longer, and the figure printed is the one measured). LAB_SWEEP_PRESET picks another preset (e.g.
tiny-char-sweep for a quick look)."""

import os
import time

import pytest

from apps.training import sweeps
from apps.training.models import Run
from tests.conftest import wait_for
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker
from workers.gpt import scaling

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

TARGET_MINUTES = 20


def test_the_cpu_sweep_preset_fits_its_scaling_laws(processes, user, shakespeare):
    corpus, tokenizer, _ = shakespeare
    preset = scaling.SWEEP_PRESETS[os.environ.get("LAB_SWEEP_PRESET", scaling.CPU_PRESET.key)]
    processes.asgi_server()
    train_worker(processes, "train@sweep-bench")
    started = time.monotonic()
    sweep = sweeps.sweep_create(owner=user, corpus=corpus, tokenizer=tokenizer, preset_key=preset.key)
    n = len(sweep.grid)
    wait_for(lambda: not Run.objects.filter(sweep=sweep, status__in=Run.ACTIVE).exists(), timeout=4 * 3600,
             what=f"the {n} runs of the sweep", interval=5)
    wall = time.monotonic() - started
    failed = list(Run.objects.filter(sweep=sweep).exclude(status=Run.Status.SUCCEEDED).values_list("pk", "reason"))
    assert not failed, failed
    s = sweeps.sweep_summary(sweep=sweep)
    fit = s["fit"]
    print(f"\n{preset.label}: {n} runs on {corpus.name} × {tokenizer.name}")
    print("  budget     shape      N        D       D/N    steps  val loss")
    for r in s["table"]:
        print(f"  {r['budget']:.2e}  {r['n_layer']}L/{r['n_head']}H/{r['n_embd']:<4d} {r['params']:>7,d} "
              f"{r['tokens']:>9,d} {r['tokens_per_param']:7.1f} {r['steps']:6d}  {r['val_loss']:.4f}")
    for f in fit["isoflops"]:
        print(f"  C={f['budget']:.2e}: N_opt={f['n_opt']:,.0f}, D_opt={f['d_opt']:,.0f}, loss there "
              f"{f['loss_opt']:.4f}")
    for p in s["problems"]:
        print(f"  not fitted: {p}")
    c = scaling.CHINCHILLA
    if fit["n_opt"]:
        print(f"  N_opt ∝ C^{fit['n_opt']['exponent']:.3f} ± {fit['n_opt']['exponent_err']:.3f}  (Chinchilla {c['a']})")
        print(f"  D_opt ∝ C^{fit['d_opt']['exponent']:.3f} ± {fit['d_opt']['exponent_err']:.3f}  (Chinchilla {c['b']})")
        print(f"  tokens/param at the optimum: {fit['tokens_per_param']:.1f}  (Chinchilla ~{c['tokens_per_param']:.0f})")
    if fit["loss"]:
        L = fit["loss"]
        print(f"  L(C) = {L['a']:.3g}·C^-{L['b']:.3f} + {L['c']:.3f}  (b ± {L['b_err']:.3f}, c ± {L['c_err']:.3f})")
        f = s["forecast"]
        print(f"  predicted best loss at {f['budget']:.2e}: {f['loss']:.4f} ({f['low']:.4f} - {f['high']:.4f})")
    print(f"  wall time {wall / 60:.1f} min (target <= {TARGET_MINUTES} min on 2 idle cores: "
          f"{'ok' if wall <= TARGET_MINUTES * 60 else 'MISSED'}), load average {os.getloadavg()[0]:.1f}")
    assert len(fit["isoflops"]) >= 1, "no budget's valley was bracketed: " + "; ".join(s["problems"])
