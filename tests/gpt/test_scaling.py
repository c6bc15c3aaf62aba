"""The sweep's fits recover the parameters that made synthetic data, within their error bars; bad input is refused."""

import math

import numpy as np
import pytest

from workers.gpt.config import GPTConfig, flops_per_token, param_count
from workers.gpt.scaling import (CHINCHILLA, CPU_PRESET, GPU_PRESET, ScalingError, Shape, fit_isoflop,
                                 fit_loss_curve, fit_power_law, plan_grid, sweep_fit)

BUDGETS = [1e12, 2e12, 4e12, 8e12, 1.6e13, 3.2e13]


def synthetic_sweep(*, k=0.08, a=0.45, width=0.6, noise=0.003, seed=0):
    """Losses that are exactly a parabola in log10 N around N_opt = k·C^a (plus noise), with a floor falling as
    L*(C) = 3·(C/1e12)^-0.1 + 1.0, and D = C / (6N)."""
    rng = np.random.default_rng(seed)
    points = []
    for C in BUDGETS:
        x_opt = math.log10(k * C**a)
        best = 3.0 * (C / 1e12) ** -0.1 + 1.0
        for dx in (-0.6, -0.3, 0.0, 0.3, 0.6):
            n = 10 ** (x_opt + dx)
            points.append({"budget": C, "params": n, "tokens": C / (6 * n),
                           "loss": best + width * dx**2 + rng.normal(0, noise)})
    return points


def test_the_power_law_of_n_opt_recovers_its_exponent_within_its_error_bar():
    fit = sweep_fit(synthetic_sweep())
    assert len(fit.isoflops) == len(BUDGETS) and not any("valley" in p for p in fit.problems)
    assert abs(fit.n_opt.exponent - 0.45) < 3 * fit.n_opt.exponent_err
    assert fit.n_opt.exponent_err < 0.02
    # D = C/(6N), so D_opt's exponent is 1 - a
    assert abs(fit.d_opt.exponent - 0.55) < 3 * fit.d_opt.exponent_err
    assert fit.tokens_per_param == pytest.approx(fit.isoflops[-1].d_opt / fit.isoflops[-1].n_opt)


def test_each_valley_finds_its_minimum():
    for f in sweep_fit(synthetic_sweep(noise=0.0)).isoflops:
        assert f.n_opt == pytest.approx(0.08 * f.budget**0.45, rel=1e-6)
        assert f.loss_opt == pytest.approx(3.0 * (f.budget / 1e12) ** -0.1 + 1.0, abs=1e-9)
        assert f.d_opt == pytest.approx(f.budget / (6 * f.n_opt), rel=1e-6)


def test_power_law_recovers_known_parameters_with_noise():
    rng = np.random.default_rng(1)
    C = np.logspace(15, 19, 9)
    y = 0.3 * C**0.5 * np.exp(rng.normal(0, 0.05, C.size))
    fit = fit_power_law(C, y)
    assert abs(fit.exponent - 0.5) < 3 * fit.exponent_err
    assert abs(math.log10(fit.k) - math.log10(0.3)) < 3 * fit.log10_k_err
    assert fit(1e17) == pytest.approx(fit.k * 1e17**fit.exponent)


def test_loss_curve_recovers_a_b_c_within_their_errors():
    rng = np.random.default_rng(2)
    C = np.logspace(12, 16, 10)
    a, b, c = 400.0, 0.2, 1.2
    L = a * C**-b + c + rng.normal(0, 0.003, C.size)
    fit = fit_loss_curve(C, L)
    assert abs(fit.b - b) < 3 * fit.b_err and abs(fit.c - c) < 3 * fit.c_err
    assert abs(fit.a - a) < 3 * fit.a_err
    assert fit.b_err > 0 and fit.c_err > 0
    pred = fit.predict(1e17)
    truth = a * 1e17**-b + c
    assert pred["low"] < pred["loss"] < pred["high"]
    assert pred["low"] - 0.01 < truth < pred["high"] + 0.01
    assert pred["loss"] == pytest.approx(float(fit(1e17)))


def test_the_prediction_interval_widens_away_from_the_data():
    rng = np.random.default_rng(3)
    C = np.logspace(12, 14, 6)
    fit = fit_loss_curve(C, 50 * C**-0.15 + 1.0 + rng.normal(0, 0.002, C.size))
    near, far = fit.predict(1e14), fit.predict(1e18)
    assert far["sd"] > near["sd"]


def test_a_budget_with_fewer_than_three_sizes_is_refused():
    with pytest.raises(ScalingError, match="at least 3 different sizes"):
        fit_isoflop(budget=1e12, params=[1e5, 2e5], losses=[2.0, 1.9])
    fit = sweep_fit([p for p in synthetic_sweep() if not (p["budget"] == 1e12 and p["params"] > 2e4)])
    assert any("at least 3 different sizes" in p for p in fit.problems)
    assert len(fit.isoflops) == len(BUDGETS) - 1


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_losses_are_refused(bad):
    with pytest.raises(ScalingError, match="> 0"):
        fit_isoflop(budget=1e12, params=[1e5, 2e5, 4e5], losses=[2.0, bad, 1.9])
    points = synthetic_sweep()
    points[0]["loss"] = bad
    with pytest.raises(ScalingError, match="> 0"):
        sweep_fit(points)


def test_losses_without_a_valley_are_refused():
    with pytest.raises(ScalingError, match="bracket the optimum"):
        fit_isoflop(budget=1e12, params=[1e5, 2e5, 4e5, 8e5], losses=[2.0, 1.5, 1.2, 1.1])  # still falling
    with pytest.raises(ScalingError, match="bracket the optimum"):
        fit_isoflop(budget=1e12, params=[1e5, 2e5, 4e5], losses=[1.9, 2.0, 1.9])  # a hill, not a valley


def test_too_few_budgets_for_the_laws_are_refused():
    with pytest.raises(ScalingError, match="at least 3 budgets"):
        fit_power_law([1e12, 2e12], [1e5, 2e5])
    with pytest.raises(ScalingError, match="at least 4"):
        fit_loss_curve([1e12, 2e12, 4e12], [2.0, 1.9, 1.8])
    fit = sweep_fit([p for p in synthetic_sweep() if p["budget"] <= 2e12])
    assert fit.n_opt is None and fit.loss is None and fit.problems


def test_grid_rows_spend_their_budget_with_the_projects_flop_count():
    base = dict(vocab_size=65, block_size=64, bias=False)
    shapes = [Shape(2, 2, 32), Shape(2, 2, 48), Shape(2, 4, 64), Shape(3, 4, 96)]
    rows = plan_grid(budgets=[1e12, 4e12], shapes=shapes, base=base, batch_size=12, flops_per_s=6e10)
    assert len(rows) == 6
    for r in rows:
        cfg = GPTConfig(**base, n_layer=r.n_layer, n_head=r.n_head, n_embd=r.n_embd)
        assert r.params == param_count(cfg, non_embedding=True)
        assert r.flops_per_token == flops_per_token(cfg)
        assert r.tokens == r.steps * 12 * 64
        step_flops = r.flops_per_token * 12 * 64
        assert abs(r.flops - r.budget) <= step_flops / 2 + 1
        assert r.seconds == pytest.approx(r.flops / 6e10)  # no step_s given: FLOPs only
        assert r.tokens_per_param == pytest.approx(r.tokens / r.params)


def test_the_time_estimate_adds_a_fixed_cost_per_step():
    base = dict(vocab_size=65, block_size=64, bias=False)
    shapes = [Shape(2, 2, 32), Shape(2, 2, 48), Shape(2, 4, 64)]
    flops_only = plan_grid(budgets=[1e12], shapes=shapes, base=base, batch_size=12, flops_per_s=6e10)
    with_steps = plan_grid(budgets=[1e12], shapes=shapes, base=base, batch_size=12, flops_per_s=6e10, step_s=0.02)
    for a, b in zip(flops_only, with_steps):
        assert b.seconds == pytest.approx(a.seconds + 0.02 * a.steps)


def test_grid_refuses_a_budget_too_small_for_its_shapes():
    with pytest.raises(ScalingError, match="add smaller shapes or raise the budget"):
        plan_grid(budgets=[1e9], shapes=[Shape(2, 2, 32), Shape(2, 4, 64), Shape(3, 4, 96)],
                  base=dict(vocab_size=65, block_size=64), batch_size=12)


def test_the_cpu_preset_fits_in_twenty_minutes_and_brackets_its_target_ratio():
    rows = CPU_PRESET.grid(vocab_size=65)
    assert sum(r.seconds for r in rows) < 20 * 60  # the estimate at the preset's assumed speed (a guess, see there)
    for budget in CPU_PRESET.budgets:
        ratios = [r.tokens_per_param for r in rows if r.budget == budget]
        assert len(ratios) == CPU_PRESET.per_budget and min(ratios) < CPU_PRESET.tokens_per_param < max(ratios)
        # the smallest size trains thousands of steps; the largest at least plan_grid's floor: it is there to be
        # too big for the budget, the far wall of the valley
        assert max(r.steps for r in rows if r.budget == budget) >= 900
        assert min(r.steps for r in rows if r.budget == budget) >= 50


def test_the_window_of_sizes_follows_the_target_ratio():
    base = dict(vocab_size=65, block_size=64, bias=False)
    shapes = [Shape(2, 2, 16), Shape(2, 2, 24), Shape(2, 2, 32), Shape(2, 2, 48), Shape(2, 4, 64), Shape(3, 4, 96)]
    chinchilla = plan_grid(budgets=[1e12], shapes=shapes, base=base, batch_size=12)
    data_hungry = plan_grid(budgets=[1e12], shapes=shapes, base=base, batch_size=12, tokens_per_param=400)
    assert max(r.params for r in data_hungry) < max(r.params for r in chinchilla)


def test_the_gpu_preset_plans_five_sizes_per_budget():
    rows = GPU_PRESET.grid(vocab_size=65)
    assert len(rows) == 25 and sum(r.seconds for r in rows) < 80 * 60


def test_chinchilla_reference_values():
    assert CHINCHILLA["a"] + CHINCHILLA["b"] == pytest.approx(1.0)
    assert CHINCHILLA["tokens_per_param"] == 20.0 and "Hoffmann" in CHINCHILLA["source"]
