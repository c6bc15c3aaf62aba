"""The Bradley–Terry fit recovers the strengths that made simulated votes; its intervals cover them."""

import numpy as np
import pytest

from apps.arena.rating import ANCHOR, ratings, win_probability, win_rates

TRUE = {"m0": 1150.0, "m1": 1050.0, "m2": 1000.0, "m3": 900.0}  # mean 1025: the fit anchors the mean at 1000


def simulate(n, *, tie_rate=0.0, seed=0):
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    out = []
    for _ in range(n):
        a, b = rng.choice(names, size=2, replace=False)
        if rng.random() < tie_rate:
            out.append((a, b, "tie"))
        else:
            out.append((a, b, "a" if rng.random() < win_probability(TRUE[a], TRUE[b]) else "b"))
    return out


def centred(values: dict) -> dict:
    mean = np.mean(list(values.values()))
    return {k: v - mean + ANCHOR for k, v in values.items()}


def test_ratings_recover_known_strengths_from_simulated_votes():
    result = {r.model: r for r in ratings(simulate(4000), rounds=100)}
    truth = centred(TRUE)
    for m, r in result.items():
        assert abs(r.rating - truth[m]) < 25, (m, r.rating, truth[m])
        assert r.low <= truth[m] <= r.high, (m, r.low, truth[m], r.high)
    assert [r.model for r in ratings(simulate(4000), rounds=20)] == ["m0", "m1", "m2", "m3"]
    assert np.mean([r.rating for r in result.values()]) == pytest.approx(ANCHOR)


def test_the_intervals_cover_the_truth_most_of_the_time():
    truth = centred(TRUE)
    covered = total = 0
    for seed in range(12):
        for r in ratings(simulate(400, seed=seed), rounds=100, seed=seed):
            covered += r.low <= truth[r.model] <= r.high
            total += 1
    assert covered / total >= 0.85  # nominal 95 %; 48 intervals


def test_fewer_votes_give_wider_intervals():
    few = {r.model: r.high - r.low for r in ratings(simulate(200), rounds=100)}
    many = {r.model: r.high - r.low for r in ratings(simulate(3000), rounds=100)}
    assert all(many[m] < few[m] for m in TRUE)


def test_the_bootstrap_is_seeded():
    votes = simulate(300)
    assert ratings(votes, seed=3) == ratings(votes, seed=3)


def test_a_model_that_always_wins_gets_a_finite_rating_and_counts_are_kept():
    result = {r.model: r for r in ratings([("x", "y", "a")] * 5 + [("y", "x", "tie")], rounds=50)}
    assert result["x"].rating > result["y"].rating and np.isfinite(result["x"].rating)
    assert (result["x"].battles, result["x"].wins, result["x"].ties) == (6, 5, 1)
    assert (result["y"].battles, result["y"].wins, result["y"].ties) == (6, 0, 1)


def test_win_rate_matrix_counts_ties_as_half():
    m = win_rates([("x", "y", "a"), ("x", "y", "tie"), ("y", "x", "a"), ("x", "z", "b")])
    assert m["models"] == ["x", "y", "z"]
    assert m["rows"][0][1] == pytest.approx(0.5)  # 1 win + 0.5 tie + 0 of 3
    assert m["rows"][1][0] == pytest.approx(0.5)
    assert m["rows"][0][2] == 0.0 and m["rows"][2][0] == 1.0
    assert m["rows"][1][2] is None and m["counts"][0][1] == 3


def test_no_votes_no_ratings():
    assert ratings([]) == []


def test_ties_pull_two_ratings_together():
    decisive = {r.model: r.rating for r in ratings([("x", "y", "a")] * 30 + [("x", "y", "b")] * 10, rounds=10)}
    with_ties = {r.model: r.rating for r in ratings([("x", "y", "a")] * 30 + [("x", "y", "b")] * 10
                                                     + [("x", "y", "tie")] * 20, rounds=10)}
    assert 0 < with_ties["x"] - with_ties["y"] < decisive["x"] - decisive["y"]
