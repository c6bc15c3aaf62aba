"""pass@k, and the summary an evaluation stores: plain math, no torch (the worker and the pages both use it).

pass@k is the chance that at least one of k answers to a problem is right. Drawing n >= k samples and counting c
right ones, the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code", the
HumanEval paper, eq. 1) is

    pass@k = 1 - C(n - c, k) / C(n, k)

averaged over problems. The ratio of binomials is computed as a product, as in the paper's numpy snippet, so large
n does not overflow. Estimating pass@1 from n samples at temperature > 0 is the same formula with k = 1: c / n.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one problem with n samples of which c are correct (Chen et al. 2021)."""
    if not (isinstance(n, int) and isinstance(c, int) and isinstance(k, int)):
        raise TypeError("n, c and k must be integers")
    if not 0 <= c <= n:
        raise ValueError(f"c ({c}) must be between 0 and n ({n})")
    if not 1 <= k <= n:
        raise ValueError(f"k ({k}) must be between 1 and the number of samples n ({n})")
    if n - c < k:  # every draw of k samples contains a correct one
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i = n-c+1}^{n} (1 - k / i)
    ratio = 1.0
    for i in range(n - c + 1, n + 1):
        ratio *= 1.0 - k / i
    return 1.0 - ratio


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The 95 % Wilson score interval of a proportion (the same formula as workers.gpt.evaluate's, torch-free here
    so the web side can use it). `successes` may be fractional: a mean of per-problem pass@k times n, for which the
    interval is an approximation (it treats each problem as one Bernoulli draw with that mean)."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def proportion(successes: float, n: int) -> dict:
    """{"value", "low", "high", "n"} for a share right out of n."""
    low, high = wilson_interval(successes, n)
    return {"value": successes / n if n else None, "low": low, "high": high, "n": n}


def generate_summary(correct_counts: list[int], *, samples: int, k: int) -> dict:
    """The results of a generate-then-check evaluation from each problem's number of correct samples (out of
    `samples` per problem): pass@1 (the score) and, when k > 1, pass@k, each with a 95 % interval."""
    n = len(correct_counts)
    p1 = sum(pass_at_k(samples, c, 1) for c in correct_counts)
    metrics = {"pass@1": proportion(p1, n)}
    if k > 1:
        pk = sum(pass_at_k(samples, c, k) for c in correct_counts)
        metrics[f"pass@{k}"] = proportion(pk, n)
    main = metrics["pass@1"]
    return {"metric": "pass@1", "score": main["value"], "low": main["low"], "high": main["high"], "n": n,
            "metrics": metrics}
