"""pass@k against the closed form of Chen et al. 2021, and the summaries built on it."""

from math import comb

import pytest

from apps.evals.metrics import generate_summary, pass_at_k, wilson_interval


def reference(n, c, k):
    return 1.0 if n - c < k else 1 - comb(n - c, k) / comb(n, k)


@pytest.mark.parametrize("n,c,k,expected", [
    (10, 0, 1, 0.0),
    (10, 10, 5, 1.0),
    (5, 1, 1, 0.2),
    (10, 3, 5, 1 - 21 / 252),  # C(7,5) / C(10,5)
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (3, 2, 2, 1.0),  # any 2 of 3 with 2 right contain a right one
])
def test_pass_at_k_matches_known_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_equals_the_binomial_formula_on_a_grid():
    for n in range(1, 21):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(reference(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_stays_finite_for_many_samples():
    assert pass_at_k(2000, 1, 100) == pytest.approx(0.05, abs=1e-9)  # one right among n: k/n


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="between 1 and the number of samples"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="between 0 and n"):
        pass_at_k(3, 4, 1)


def test_generate_summary_reports_pass_at_1_and_pass_at_k_with_intervals():
    counts = [0, 1, 4, 2]  # right samples out of 4, per problem
    s = generate_summary(counts, samples=4, k=4)
    assert s["metric"] == "pass@1" and s["n"] == 4
    assert s["score"] == pytest.approx((0 + 0.25 + 1 + 0.5) / 4)
    assert s["metrics"]["pass@4"]["value"] == pytest.approx(3 / 4)
    assert 0 <= s["low"] < s["score"] < s["high"] <= 1


def test_wilson_interval_agrees_with_the_scoring_library():
    from workers.gpt.evaluate import wilson_interval as library

    for k, n in [(0, 10), (3, 10), (10, 10), (57, 200)]:
        assert wilson_interval(k, n) == pytest.approx(library(k, n))
