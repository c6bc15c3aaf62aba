"""Bradley–Terry ratings from pairwise votes, on an Elo-like scale, with bootstrap intervals. NumPy only.

This is the method LM Arena publishes (Chiang et al. 2024, "Chatbot Arena", arXiv:2403.04132, section 5; their
notebook fits sklearn's LogisticRegression to the battles): model i beats model j with probability
σ(ξ_i − ξ_j), and the ξ are fitted by maximum likelihood. A tie counts as half a win for each side (LM Arena counts
a tie as one win each way at half weight, which is the same likelihood). Ratings are shown as
R = 1000 + (400 / ln 10)·(ξ − mean ξ), the scale on which a 400-point gap means 10:1 odds, as in chess Elo.

The fit is Newton's method on the log-likelihood of the aggregated win counts, plus a weak Gaussian prior
(RIDGE, like a tenth of a virtual tie per model) so that a model that has won every battle gets a large but finite
rating instead of infinity. The 95 % intervals come from resampling the battles with replacement (seeded, so the
leaderboard does not flicker between requests) and refitting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SCALE = 400 / math.log(10)  # Elo points per unit of log-odds
ANCHOR = 1000.0  # the mean rating
RIDGE = 0.1
BOOTSTRAP_ROUNDS = 200
PROVISIONAL_BATTLES = 10  # below this many battles a model's interval is shown as provisional

A, B, TIE = "a", "b", "tie"  # the outcomes of one battle: model_a won, model_b won, neither


@dataclass(frozen=True)
class Rating:
    model: str
    rating: float
    low: float  # 95 % bootstrap interval
    high: float
    battles: int  # battles with a vote
    wins: int
    ties: int

    @property
    def provisional(self) -> bool:
        """Too few battles for the bootstrap to mean much (one vote resamples to itself: a zero-width interval)."""
        return self.battles < PROVISIONAL_BATTLES

    def to_dict(self) -> dict:
        return {"model": self.model, "rating": self.rating, "low": self.low, "high": self.high,
                "battles": self.battles, "wins": self.wins, "ties": self.ties, "provisional": self.provisional}


def _wins(outcomes, index: dict[str, int]) -> np.ndarray:
    """W[i, j]: how often i beat j, a tie counting half each way."""
    K = len(index)
    W = np.zeros((K, K))
    for a, b, result in outcomes:
        i, j = index[a], index[b]
        if result == A:
            W[i, j] += 1
        elif result == B:
            W[j, i] += 1
        else:
            W[i, j] += 0.5
            W[j, i] += 0.5
    return W


def fit_strengths(W: np.ndarray, *, ridge: float = RIDGE, iterations: int = 100) -> np.ndarray:
    """The maximum-likelihood ξ (log-strengths, mean 0) for a win matrix W (W[i, j] = wins of i over j)."""
    K = W.shape[0]
    N = W + W.T  # games between each pair
    xi = np.zeros(K)
    for _ in range(iterations):
        P = 1 / (1 + np.exp(-(xi[:, None] - xi[None, :])))  # P[i, j] = σ(ξ_i − ξ_j)
        grad = (W - N * P).sum(axis=1) - ridge * xi
        V = N * P * (1 - P)
        H = V - np.diag(V.sum(axis=1)) - ridge * np.eye(K)  # negative definite thanks to the ridge
        step = np.linalg.solve(H, grad)
        xi = xi - step
        if np.max(np.abs(step)) < 1e-10:
            break
    return xi - xi.mean()


def ratings(outcomes: list[tuple[str, str, str]], *, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> list[Rating]:
    """Ratings for every model in `outcomes` [(model_a, model_b, "a" | "b" | "tie"), ...], best first."""
    models = sorted({m for a, b, _ in outcomes for m in (a, b)})
    if not models:
        return []
    index = {m: i for i, m in enumerate(models)}
    W = _wins(outcomes, index)
    point = ANCHOR + SCALE * fit_strengths(W)
    # bootstrap: resample the battles with replacement (a multinomial over the distinct (pair, outcome) cells)
    cells, counts = np.unique(np.array([[index[a], index[b], {A: 0, B: 1, TIE: 2}[r]] for a, b, r in outcomes]),
                              axis=0, return_counts=True)
    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, len(models)))
    for k in range(rounds):
        drawn = rng.multinomial(len(outcomes), counts / counts.sum())
        Wk = np.zeros_like(W)
        for (i, j, r), n in zip(cells, drawn):
            if r == 0:
                Wk[i, j] += n
            elif r == 1:
                Wk[j, i] += n
            else:
                Wk[i, j] += n / 2
                Wk[j, i] += n / 2
        samples[k] = ANCHOR + SCALE * fit_strengths(Wk)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    battles = {m: 0 for m in models}
    wins = {m: 0 for m in models}
    ties = {m: 0 for m in models}
    for a, b, r in outcomes:
        battles[a] += 1
        battles[b] += 1
        if r == TIE:
            ties[a] += 1
            ties[b] += 1
        else:
            wins[a if r == A else b] += 1
    result = [Rating(model=m, rating=float(point[i]), low=float(low[i]), high=float(high[i]), battles=battles[m],
                     wins=wins[m], ties=ties[m]) for m, i in index.items()]
    return sorted(result, key=lambda r: -r.rating)


def win_rates(outcomes: list[tuple[str, str, str]], *, order: list[str] | None = None) -> dict:
    """{"models": [...], "rows": [[rate or None, ...], ...], "counts": [[n, ...]]}: the share of battles between row
    and column that the row model won (ties half), None where they never met."""
    models = order or sorted({m for a, b, _ in outcomes for m in (a, b)})
    index = {m: i for i, m in enumerate(models)}
    W = _wins([o for o in outcomes if o[0] in index and o[1] in index], index)
    N = W + W.T
    rows = [[(float(W[i, j] / N[i, j]) if N[i, j] else None) for j in range(len(models))] for i in range(len(models))]
    return {"models": models, "rows": rows, "counts": N.astype(int).tolist()}


def win_probability(rating_i: float, rating_j: float) -> float:
    """The fitted chance that i beats j."""
    return 1 / (1 + 10 ** ((rating_j - rating_i) / 400))
