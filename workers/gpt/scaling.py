"""Scaling sweeps: plan an iso-FLOP grid, then fit what it measured. NumPy and SciPy only, no torch, so the web side
(the sweep form and page) can import it.

The method is Chinchilla's approach 2 (Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models",
arXiv:2203.15556, section 3.2): for each compute budget C train a few model sizes N, each for as many tokens D as
spends C; the final loss against log N is a valley; a parabola's bottom is that budget's compute-optimal N_opt (and
D_opt). Across budgets, N_opt = k·C^a and D_opt = k'·C^b are straight lines on log-log axes. And the best loss per
budget follows L(C) = a·C^-b + c, which predicts what a bigger budget buys.

    rows = plan_grid(budgets=[1e12, 2e12], shapes=CPU_PRESET.shapes, base=CPU_PRESET.base(vocab_size=65), ...)
    ... train each row, record (budget, params, tokens, final val loss) ...
    fit = sweep_fit(points)            # per-budget valleys, power laws with standard errors, L(C), a prediction

Compute is counted as the training dashboard counts it (workers/gpt/config.py flops_per_token: 6N plus attention),
and N is param_count(non_embedding=True), the N of that 6N, so a grid row's FLOPs and the dashboard's MFU agree.

Why one file of about 450 lines: it is one method, approach 2, whose two halves are written against each other: the
grid is planned so that each budget has the sizes its valley fit needs (MIN_SIZES_PER_BUDGET, MIN_BUDGETS), and the
fits read exactly the rows the grid made. About half the lines are the fits' docstrings and the papers' constants.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from workers.gpt.config import GPTConfig, flops_per_token, param_count


def gettext_noop(text: str) -> str:
    """Marks a preset's words for the web app's catalogue (makemessages finds this name); the app translates them
    where it shows them. This library imports nothing from Django."""
    return text

# Hoffmann et al. 2022, Table 2, approach 2 (IsoFLOP profiles): N_opt ∝ C^0.49, D_opt ∝ C^0.51 (approach 1 gives
# 0.50 / 0.50); Table 3's compute-optimal models come out near 20 training tokens per parameter.
CHINCHILLA = {
    "a": 0.49,  # exponent of N_opt against C
    "b": 0.51,  # exponent of D_opt against C
    "tokens_per_param": 20.0,
    "source": "Hoffmann et al. 2022, Training Compute-Optimal Large Language Models (arXiv:2203.15556), "
              "approach 2, Table 2; ~20 tokens/parameter from Table 3",
}

MIN_SIZES_PER_BUDGET = 3  # a parabola needs three points
MIN_BUDGETS = 3  # a line with a standard error needs three points
MIN_LOSS_POINTS = 4  # a·C^-b + c has three parameters; their errors need one point more


def gettext_noop(message: str) -> str:
    """Marks a sentence for the app's translation catalogue (makemessages finds it by this name); this module imports
    no Django, so the app words it in the reader's language from `ScalingError.template` and `.params`."""
    return message


class ScalingError(ValueError):
    """Input a fit cannot use; the message says what to add or change. A message built from a `%(name)s` template
    keeps the template and its params, so the app layer can translate it (apps/training/sweeps.py)."""

    def __init__(self, template: str, **params):
        super().__init__(template % params if params else template)
        self.template, self.params = template, params


# ----------------------------------------------------------------------------------------------------------------------
# planning


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_head: int
    n_embd: int


@dataclass(frozen=True)
class GridRow:
    budget: float  # the compute budget C this row spends (FLOPs)
    n_layer: int
    n_head: int
    n_embd: int
    params: int  # N: param_count(non_embedding=True), the N in 6N
    flops_per_token: int  # config.flops_per_token: 6N + attention
    batch_size: int
    block_size: int
    steps: int
    tokens: int  # D = steps * batch_size * block_size
    tokens_per_param: float
    flops: float  # what the row really spends: steps are whole, so within half a step of the budget
    seconds: float | None  # steps·step_s + flops / FLOP/s; None when no throughput was given

    def to_dict(self) -> dict:
        return asdict(self)


def flops_per_s_from(*, tokens_per_s: float, cfg: GPTConfig) -> float:
    """A throughput measured in tokens/s on one model, as FLOP/s: what the same device may do on other sizes."""
    return tokens_per_s * flops_per_token(cfg)


def plan_grid(*, budgets: list[float], shapes: list[Shape], base: dict, batch_size: int, per_budget: int = 3,
              min_steps: int = 50, flops_per_s: float | None = None, step_s: float = 0.0,
              tokens_per_param: float = CHINCHILLA["tokens_per_param"]) -> list[GridRow]:
    """For each budget, the `per_budget` shapes around the one nearest `tokens_per_param` (Chinchilla's 20 unless
    told), each with the step count that spends the budget. `base` holds the other GPTConfig fields (vocab_size, block_size, ...).

    The time estimate is steps·step_s + FLOPs / flops_per_s: tiny models are not FLOP-bound, a fixed cost per step
    (Python, kernel launches, the optimizer) dominates them, so a FLOP rate alone would promise too much.

    Shapes that would train fewer than `min_steps` steps are left out (too short to mean anything); a budget with
    fewer than `per_budget` shapes left is refused, naming a smaller shape or a bigger budget to try."""
    if per_budget < MIN_SIZES_PER_BUDGET:
        raise ScalingError(f"per_budget ({per_budget}) must be at least {MIN_SIZES_PER_BUDGET}: a parabola needs "
                           f"three model sizes per budget")
    if not budgets or any(not (isinstance(c, (int, float)) and c > 0 and math.isfinite(c)) for c in budgets):
        raise ScalingError("budgets must be positive FLOP counts, e.g. [1e12, 2e12, 4e12]")
    if batch_size < 1:
        raise ScalingError(f"batch_size ({batch_size}) must be at least 1")
    configs = sorted(((s, GPTConfig(**{**base, "n_layer": s.n_layer, "n_head": s.n_head, "n_embd": s.n_embd}))
                      for s in shapes), key=lambda sc: param_count(sc[1], non_embedding=True))
    rows = []
    for budget in sorted(budgets):
        candidates = []
        for shape, cfg in configs:
            fpt = flops_per_token(cfg)
            tokens_per_step = batch_size * cfg.block_size
            steps = round(budget / (fpt * tokens_per_step))
            if steps >= min_steps:
                candidates.append((shape, cfg, fpt, steps))
        if len(candidates) < per_budget:
            raise ScalingError(
                f"budget {budget:.3g} FLOPs leaves {len(candidates)} shape(s) with at least {min_steps} steps; "
                f"{per_budget} are needed: add smaller shapes or raise the budget")
        # centre the window on the shape whose tokens/param is nearest the target (on a log scale)
        ratios = [s * batch_size * c.block_size / param_count(c, non_embedding=True) for _, c, _, s in candidates]
        best = min(range(len(candidates)), key=lambda i: abs(math.log(ratios[i] / tokens_per_param)))
        start = min(max(0, best - per_budget // 2), len(candidates) - per_budget)
        for shape, cfg, fpt, steps in candidates[start:start + per_budget]:
            n = param_count(cfg, non_embedding=True)
            tokens = steps * batch_size * cfg.block_size
            flops = float(tokens * fpt)
            rows.append(GridRow(budget=float(budget), n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd,
                                params=n, flops_per_token=fpt, batch_size=batch_size, block_size=cfg.block_size,
                                steps=steps, tokens=tokens, tokens_per_param=tokens / n, flops=flops,
                                seconds=steps * step_s + flops / flops_per_s if flops_per_s else None))
    return rows


@dataclass(frozen=True)
class SweepPreset:
    key: str
    label: str
    description: str
    corpus: str
    tokenizers: tuple[str, ...]
    budgets: tuple[float, ...]
    shapes: tuple[Shape, ...]
    model: dict  # GPTConfig fields besides the shape (vocab_size comes from the tokenizer)
    batch_size: int
    per_budget: int
    flops_per_s: float  # the throughput the time estimate assumes (FLOP/s achieved, not peak)
    step_s: float  # the fixed cost of one optimizer step, whatever its size
    tokens_per_param: float = CHINCHILLA["tokens_per_param"]  # where each budget's window of sizes is centred
    # the peak learning rate of a model of width lr_width; wider models get learning_rate · lr_width / n_embd (the
    # 1/width rule of muP-style transfer for Adam), narrower ones no more than learning_rate
    learning_rate: float = 1e-2
    lr_width: int = 64
    eval_iters: int = 20  # batches per final loss estimate: ~0.01 noise on a 2048-token batch

    def base(self, *, vocab_size: int) -> dict:
        return {**self.model, "vocab_size": vocab_size}

    def lr_for(self, n_embd: int) -> float:
        return self.learning_rate * min(1.0, self.lr_width / n_embd)

    def train_config(self, row: GridRow) -> dict:
        """TrainConfig fields of one grid row's run: the row's steps, a warmup of 5 % of them, cosine decay to a
        tenth over the whole run (Chinchilla: the schedule's length matches the run's), one evaluation at the end
        besides the one at step 0, and a checkpoint halfway so a lost worker's run resumes instead of restarting."""
        lr = self.lr_for(row.n_embd)
        return {"batch_size": row.batch_size, "grad_accum": 1, "max_steps": row.steps, "learning_rate": lr,
                "min_lr": lr / 10, "warmup_steps": max(1, row.steps // 20), "weight_decay": 0.1, "beta2": 0.99,
                "eval_interval": row.steps, "eval_iters": self.eval_iters,
                "checkpoint_interval": max(1, row.steps // 2), "keep_last": 1}

    def grid(self, *, vocab_size: int, flops_per_s: float | None = None) -> list[GridRow]:
        return plan_grid(budgets=list(self.budgets), shapes=list(self.shapes), base=self.base(vocab_size=vocab_size),
                         batch_size=self.batch_size, per_budget=self.per_budget,
                         flops_per_s=flops_per_s or self.flops_per_s, step_s=self.step_s,
                         tokens_per_param=self.tokens_per_param)


# Two CPU cores. Step counts, not FLOPs, decide the wall time of models this small: a fixed cost per step (Python,
# the optimizer, kernel launches) dominates them. Hence batches of 64 and a ladder of four budgets a factor 2 apart
# (1e11 to 8e11 FLOPs), five sizes each, ~25k steps in all: at ~40 ms a step on two idle cores (a guess; on this
# machine shared eight ways a step took ~250 ms) about 19 minutes.
# Why these sizes (1 layer of 12 to 3 layers of 64: 2.5k to 150k non-embedding parameters): pilot runs on
# shakespeare.txt (batch 64, context 64, lr 1e-2, one thread on a heavily loaded machine) gave final val losses
#   at 1e11 FLOPs: 2.28 for 2.5k parameters (1003 steps), 2.26 for 4.1k (659), 2.30 for 8.5k (352), 2.56 for 27k (116)
#   at 3e11 FLOPs: 2.08 for 4.1k (1977 steps), 1.99 for 8.5k (1055), 2.25 for 27k (349), 2.67 for 59k (172),
#                  3.12 for 152k (69)
# Both valleys are bracketed: parabolas put N_opt at 4.2k (1e11) and 8.2k (3e11), ~600 and ~540 tokens/parameter.
# At budgets a CPU affords, short runs leave the larger models optimization-limited, so the optimum sits at
# hundreds of tokens per parameter, not Chinchilla's 20 (an earlier micro-sweep centred on 20, three sizes per
# budget, had the smallest size best at every budget and fitted nothing). So each budget's five sizes are centred
# on 300 tokens/parameter and reach down to models of a few thousand parameters. The whole 20-run preset was not run
# end to end on an idle machine (tests/benchmarks/test_scaling_sweep.py does that).
CPU_PRESET = SweepPreset(
    key="shakespeare-char-cpu-sweep", label=gettext_noop("Shakespeare char, CPU sweep"),
    description=gettext_noop("20 runs: 4 budgets (1e11 to 8e11 FLOPs) × 5 sizes (2.5k-150k parameters); ~20 minutes "
                             "on 2 idle cores."),
    corpus="shakespeare", tokenizers=("shakespeare-char", "char"),
    budgets=(1e11, 2e11, 4e11, 8e11),
    shapes=(Shape(1, 2, 12), Shape(1, 2, 16), Shape(1, 2, 24), Shape(2, 2, 32), Shape(2, 4, 48), Shape(3, 4, 64)),
    model=dict(block_size=64, dropout=0.0, bias=False), batch_size=64, per_budget=5, flops_per_s=6e10, step_s=0.04,
    tokens_per_param=300.0,
)

# One GPU (an A100-class card doing ~5e13 FLOP/s on these small shapes): five budgets a factor 2 apart from 1e15,
# five sizes each (0.6M to 25M parameters), context 256, batches of 128: 5 × 31 × 1e15 = 1.55e17 FLOPs (~52 min)
# in ~145k steps (~8 ms of fixed cost each, ~19 min): about 70 minutes.
GPU_PRESET = SweepPreset(
    key="shakespeare-char-gpu-sweep", label=gettext_noop("Shakespeare char, GPU sweep"),
    description=gettext_noop("25 runs: 5 budgets (1e15 to 1.6e16 FLOPs) × 5 sizes (0.6M-25M parameters); ~70 minutes "
                             "on one GPU."),
    corpus="shakespeare", tokenizers=("shakespeare-char", "char"),
    budgets=(1e15, 2e15, 4e15, 8e15, 1.6e16),
    shapes=(Shape(2, 4, 96), Shape(3, 4, 128), Shape(4, 4, 192), Shape(4, 8, 256), Shape(6, 6, 288),
            Shape(6, 6, 384), Shape(8, 8, 384), Shape(8, 8, 512), Shape(10, 8, 512)),
    model=dict(block_size=256, dropout=0.0, bias=False), batch_size=128, per_budget=5, flops_per_s=5e13, step_s=0.008,
)

# A look at the machinery in a few minutes, not a measurement: context 16, batches of 8, models of 1k-27k
# parameters, budgets small enough that each run is a few hundred steps. Its valleys are too shallow to trust.
TINY_PRESET = SweepPreset(
    key="tiny-char-sweep", label=gettext_noop("Tiny smoke sweep"),
    description=gettext_noop("12 runs of a few hundred steps each (1k-27k parameters, context 16): the machinery, "
                             "in minutes."),
    corpus="shakespeare", tokenizers=("shakespeare-char", "char"),
    budgets=(5e8, 1e9, 2e9, 4e9),
    shapes=(Shape(1, 1, 8), Shape(1, 2, 12), Shape(1, 2, 16), Shape(1, 2, 24), Shape(2, 2, 32)),
    model=dict(block_size=16, dropout=0.0, bias=False), batch_size=8, per_budget=3, flops_per_s=6e10, step_s=0.02,
)

SWEEP_PRESETS = {p.key: p for p in (CPU_PRESET, GPU_PRESET, TINY_PRESET)}


# ----------------------------------------------------------------------------------------------------------------------
# fits


def _positive(name: str, values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    if a.ndim != 1 or not np.all(np.isfinite(a)):
        raise ScalingError(f"{name} must be a list of finite numbers")
    if np.any(a <= 0):
        raise ScalingError(f"{name} must all be > 0 (got {a[a <= 0][0]:g}): a loss or a count cannot be zero or "
                           f"negative on log axes; drop the failed run")
    return a


@dataclass(frozen=True)
class IsoFlopFit:
    budget: float
    coef: tuple[float, float, float]  # L = coef[0]·x² + coef[1]·x + coef[2], x = log10(N)
    n_opt: float
    n_opt_err: float | None  # standard error of log10(N_opt), None when the parabola went through exactly 3 points
    d_opt: float
    loss_opt: float  # the parabola's bottom

    def to_dict(self) -> dict:
        return asdict(self)


def fit_isoflop(*, budget: float, params, losses, tokens=None) -> IsoFlopFit:
    """The parabola in log10 N through one budget's final losses, and its bottom (N_opt, the loss there). D_opt is
    read off the budget's own (N, D) pairs (log D is linear in log N at fixed C), so it keeps the project's
    accounting of FLOPs per token; without `tokens` it is C / (6·N_opt), Chinchilla's."""
    n = _positive("params", params)
    loss = _positive("losses", losses)
    if len(n) != len(loss):
        raise ScalingError(f"params ({len(n)}) and losses ({len(loss)}) must be the same length")
    if len(np.unique(n)) < MIN_SIZES_PER_BUDGET:
        raise ScalingError(gettext_noop("budget %(budget).3g: %(n)s model size(s) finished; a parabola needs at "
                                        "least %(need)s different sizes (wait for the others, or add sizes)"),
                           budget=budget, n=len(np.unique(n)), need=MIN_SIZES_PER_BUDGET)
    x = np.log10(n)
    if len(x) > 3:
        coef, cov = np.polyfit(x, loss, 2, cov=True)
    else:
        coef, cov = np.polyfit(x, loss, 2), None
    p0, p1, p2 = (float(c) for c in coef)
    if p0 <= 0:
        raise ScalingError(gettext_noop("budget %(budget).3g: the losses do not bend upward (no valley), so the "
                                        "sizes do not bracket the optimum: add a smaller and a larger model"),
                           budget=budget)
    x_opt = -p1 / (2 * p0)
    if not x.min() <= x_opt <= x.max():
        if x_opt > x.max():
            raise ScalingError(gettext_noop("budget %(budget).3g: the loss is lowest above the largest size tried "
                                            "(N = %(n).3g), so the sizes do not bracket the optimum: add a larger "
                                            "model"), budget=budget, n=float(n.max()))
        raise ScalingError(gettext_noop("budget %(budget).3g: the loss is lowest below the smallest size tried "
                                        "(N = %(n).3g), so the sizes do not bracket the optimum: add a smaller "
                                        "model"), budget=budget, n=float(n.min()))
    err = None
    if cov is not None:
        g = np.array([p1 / (2 * p0**2), -1 / (2 * p0), 0.0])  # d x_opt / d (p0, p1, p2)
        err = float(math.sqrt(max(g @ cov @ g, 0.0)))
    if tokens is not None:
        d = _positive("tokens", tokens)
        slope, intercept = np.polyfit(x, np.log10(d), 1)
        d_opt = float(10 ** (intercept + slope * x_opt))
    else:
        d_opt = float(budget / (6 * 10**x_opt))
    return IsoFlopFit(budget=float(budget), coef=(p0, p1, p2), n_opt=float(10**x_opt), n_opt_err=err, d_opt=d_opt,
                      loss_opt=float(p0 * x_opt**2 + p1 * x_opt + p2))


@dataclass(frozen=True)
class PowerLaw:
    k: float  # y = k · x^exponent
    exponent: float
    exponent_err: float  # standard error
    log10_k_err: float

    def __call__(self, x):
        return self.k * np.asarray(x, dtype=float) ** self.exponent

    def to_dict(self) -> dict:
        return asdict(self)


def fit_power_law(x, y) -> PowerLaw:
    """y = k·x^a by ordinary least squares of log10 y on log10 x, with the textbook standard errors."""
    lx, ly = np.log10(_positive("x", x)), np.log10(_positive("y", y))
    if len(lx) != len(ly):
        raise ScalingError(f"x ({len(lx)}) and y ({len(ly)}) must be the same length")
    if len(np.unique(lx)) < MIN_BUDGETS:
        raise ScalingError(f"a power law with error bars needs at least {MIN_BUDGETS} budgets, got "
                           f"{len(np.unique(lx))}: add a budget")
    X = np.column_stack([np.ones_like(lx), lx])
    beta, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ beta
    dof = len(lx) - 2
    s2 = float(resid @ resid) / dof
    cov = s2 * np.linalg.inv(X.T @ X)
    return PowerLaw(k=float(10 ** beta[0]), exponent=float(beta[1]), exponent_err=float(math.sqrt(cov[1, 1])),
                    log10_k_err=float(math.sqrt(cov[0, 0])))


@dataclass(frozen=True)
class LossCurve:
    """L(C) = a·C^-b + c, fitted as A·(C/C0)^-b + c with C0 the geometric mean of the budgets (so the solver sees
    numbers near 1); a = A·C0^b."""

    a: float
    b: float
    c: float
    a_err: float
    b_err: float
    c_err: float
    c0: float
    cov: tuple  # covariance of (A, b, c), for predictions

    def __call__(self, budget):
        x = np.asarray(budget, dtype=float) / self.c0
        return self.a * self.c0 ** -self.b * x ** -self.b + self.c

    def predict(self, budget: float) -> dict:
        """The loss at `budget` with a 95 % interval from the parameters' uncertainty (delta method). It leaves out
        run-to-run noise, and far beyond the measured budgets it is only as good as the form of the law."""
        A = self.a * self.c0 ** -self.b
        x = budget / self.c0
        g = np.array([x ** -self.b, -A * x ** -self.b * math.log(x), 1.0])
        sd = float(math.sqrt(max(g @ np.asarray(self.cov) @ g, 0.0)))
        loss = float(A * x ** -self.b + self.c)
        return {"budget": float(budget), "loss": loss, "low": loss - 1.96 * sd, "high": loss + 1.96 * sd, "sd": sd}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cov"] = [list(r) for r in self.cov]
        return d


def fit_loss_curve(budgets, losses) -> LossCurve:
    """L(C) = a·C^-b + c by scipy.optimize.curve_fit; errors are the square roots of the covariance's diagonal."""
    from scipy.optimize import curve_fit

    C, L = _positive("budgets", budgets), _positive("losses", losses)
    if len(C) != len(L):
        raise ScalingError(f"budgets ({len(C)}) and losses ({len(L)}) must be the same length")
    if len(np.unique(C)) < MIN_LOSS_POINTS:
        raise ScalingError(gettext_noop("L(C) = a·C^-b + c has 3 parameters; their errors need at least %(need)s "
                                        "budgets, got %(n)s: add a budget"), need=MIN_LOSS_POINTS, n=len(np.unique(C)))
    c0 = float(np.exp(np.mean(np.log(C))))
    x = C / c0

    def law(x, A, b, c):
        return A * x ** -b + c

    # start: the floor a little under the best loss, then a straight line in log-log for the rest
    c_start = float(L.min()) * 0.9
    slope, intercept = np.polyfit(np.log(x), np.log(L - c_start), 1)
    p0 = [float(np.exp(intercept)), max(float(-slope), 1e-3), c_start]
    try:
        popt, pcov = curve_fit(law, x, L, p0=p0, bounds=([0, 0, 0], [np.inf, 5, np.inf]), maxfev=20000)
    except RuntimeError as e:
        raise ScalingError(gettext_noop("L(C) = a·C^-b + c did not converge (%(error)s): the losses may not fall "
                                        "with compute"), error=str(e)) from None
    if not np.all(np.isfinite(pcov)):
        raise ScalingError(gettext_noop("L(C): the parameters' covariance is undefined (the points fit too many "
                                        "curves): add a budget"))
    A, b, c = (float(v) for v in popt)
    a = A * c0**b
    # a = A·c0^b: its standard error by the delta method over (A, b)
    g = np.array([c0**b, a * math.log(c0), 0.0])
    a_err = float(math.sqrt(max(g @ pcov @ g, 0.0)))
    return LossCurve(a=a, b=b, c=c, a_err=a_err, b_err=float(math.sqrt(pcov[1, 1])),
                     c_err=float(math.sqrt(pcov[2, 2])), c0=c0, cov=tuple(tuple(float(v) for v in r) for r in pcov))


@dataclass
class SweepFit:
    isoflops: list[IsoFlopFit]
    n_opt: PowerLaw | None = None
    d_opt: PowerLaw | None = None
    loss: LossCurve | None = None
    tokens_per_param: float | None = None  # D_opt / N_opt at the largest budget fitted
    problems: list[str] = field(default_factory=list)  # why a part could not be fitted yet
    # the same, as (template, params) for the app to translate: problems[i] == notes[i][0] % notes[i][1]
    notes: list[tuple[str, dict]] = field(default_factory=list)

    def note(self, template: str, **params) -> None:
        self.problems.append(template % params if params else template)
        self.notes.append((template, params))

    def to_dict(self) -> dict:
        return {"isoflops": [f.to_dict() for f in self.isoflops],
                "n_opt": self.n_opt.to_dict() if self.n_opt else None,
                "d_opt": self.d_opt.to_dict() if self.d_opt else None,
                "loss": self.loss.to_dict() if self.loss else None,
                "tokens_per_param": self.tokens_per_param, "problems": list(self.problems),
                "chinchilla": dict(CHINCHILLA)}


def sweep_fit(points: list[dict]) -> SweepFit:
    """Everything the sweep page draws, from finished runs [{"budget", "params", "tokens", "loss"}, ...].

    Fits what it can: a budget whose runs are not all in yet is skipped with a note in `problems`, and the power
    laws and L(C) wait for enough budgets. Input that is wrong rather than incomplete (a non-positive loss) raises."""
    by_budget: dict[float, list[dict]] = {}
    for p in points:
        by_budget.setdefault(float(p["budget"]), []).append(p)
    fits, errors = [], []
    for budget in sorted(by_budget):
        rows = by_budget[budget]
        try:
            fits.append(fit_isoflop(budget=budget, params=[r["params"] for r in rows],
                                    losses=[r["loss"] for r in rows], tokens=[r["tokens"] for r in rows]))
        except ScalingError as e:
            if "> 0" in str(e):
                raise
            errors.append(e)
    result = SweepFit(isoflops=fits)
    for e in errors:
        result.note(e.template, **e.params)
    if len(fits) >= MIN_BUDGETS:
        C = [f.budget for f in fits]
        result.n_opt = fit_power_law(C, [f.n_opt for f in fits])
        result.d_opt = fit_power_law(C, [f.d_opt for f in fits])
        result.tokens_per_param = fits[-1].d_opt / fits[-1].n_opt
    else:
        result.note(gettext_noop("the power laws need %(need)s budgets with a fitted valley; %(n)s so far"),
                    need=MIN_BUDGETS, n=len(fits))
    if len(fits) >= MIN_LOSS_POINTS:
        try:
            result.loss = fit_loss_curve([f.budget for f in fits], [f.loss_opt for f in fits])
        except ScalingError as e:
            result.note(e.template, **e.params)
    else:
        result.note(gettext_noop("L(C) needs %(need)s budgets with a fitted valley; %(n)s so far"),
                    need=MIN_LOSS_POINTS, n=len(fits))
    return result
