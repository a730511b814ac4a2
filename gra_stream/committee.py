"""The committee rule and the role deal, as pure functions.

Arithmetic is exact (fractions): a committee mean of exactly tau, or a standard deviation of exactly
delta, is decided the way the rule says, never by a rounding error. The standard deviation is the
population one (divide by N), as a committee is the whole population of its reviewers' scores.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from functools import lru_cache
from math import factorial

from gra_stream.ids import hashes


@lru_cache(maxsize=256)  # called per row with the same few config numbers
def exact(x: float | int | str) -> Fraction:
    """A config number as the decimal the user wrote (8.0 -> 8, 1.5 -> 3/2)."""
    return Fraction(str(x))


def reviewer_mean(scores: Sequence[int]) -> Fraction:
    return Fraction(sum(scores), len(scores))


def committee_stats(means: Sequence[Fraction]) -> tuple[Fraction, Fraction]:
    """(mean, population variance) of the reviewers' means."""
    n = len(means)
    mu = sum(means, Fraction(0)) / n
    return mu, sum(((m - mu) ** 2 for m in means), Fraction(0)) / n


def stats_from_sums(n: int, total: int, squares: int, dims: int) -> tuple[Fraction, Fraction]:
    """`committee_stats` of n reviewers' means from the sum of their score totals (each the sum of
    `dims` scores) and the sum of those totals squared: what SQL can aggregate in fixed-size state."""
    mu = Fraction(total, dims * n)
    return mu, Fraction(n * squares - total * total, dims * dims * n * n)


def committee_rule(means: Sequence[Fraction], *, tau: float, delta: float) -> tuple[str, str, Fraction, Fraction]:
    """(decision, reason, mean, variance) for the reviewers' means: reject if mean < tau, accept if
    the std <= delta, otherwise adjudicate."""
    return rule_from_stats(*committee_stats(means), tau=tau, delta=delta)


def rule_from_stats(mu: Fraction, variance: Fraction, *, tau: float, delta: float) -> tuple[str, str, Fraction, Fraction]:
    if mu < exact(tau):
        return "reject", "low_score", mu, variance
    if variance <= exact(delta) ** 2:
        return "accept", "committee_agrees", mu, variance
    return "adjudicate", "reviewers_disagree", mu, variance


Deal = tuple[str, list[str], str]  # generator, reviewers, adjudicator


def deal_roles(pool: Sequence[str], n_reviewers: int, *, run_seed: int, task_id: str) -> Deal:
    """Deal generator, reviewers and adjudicator from the pool, at random but reproducibly per task.

    With at least n_reviewers + 2 models every role goes to a distinct model. With fewer, the
    reviewers are the models other than the generator, cycled in dealt order (the generator reviews
    only when it is the only model), and the adjudicator is the first dealt model not already used,
    else the first reviewer that is not the generator, else the generator.
    """
    return deal_many(pool, n_reviewers, run_seed=run_seed, task_ids=[task_id])[0]


def deal_many(pool: Sequence[str], n_reviewers: int, *, run_seed: int, task_ids: Iterable[str]) -> list[Deal]:
    """`deal_roles` for every task: a task's SHA-256, read as a number below n!, names one of the pool's
    n! orders (`_permutation`). For pools of up to 8 models the deals of all orders are made once, so a
    task's deal is a lookup rather than a seeded shuffle."""
    pool, orders = tuple(pool), factorial(len(pool))
    if len(pool) <= 8:
        deal = _deal_table(pool, n_reviewers).__getitem__
    else:
        def deal(index: int) -> Deal:
            return _deal_of([pool[k] for k in _permutation(len(pool), index)], n_reviewers)
    return [deal(int.from_bytes(d.digest(), "big") % orders) for d in hashes(task_ids, before=(run_seed, "deal"))]


@lru_cache(maxsize=16)
def _deal_table(pool: tuple[str, ...], n_reviewers: int) -> list[Deal]:
    return [_deal_of([pool[k] for k in _permutation(len(pool), index)], n_reviewers)
            for index in range(factorial(len(pool)))]


def _permutation(n: int, index: int) -> list[int]:
    """The permutation of range(n) that `index` (below n!) names: its digits in mixed radix drive a
    Fisher-Yates shuffle, so every index gives a different order."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        index, j = divmod(index, i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def _deal_of(order: list[str], n_reviewers: int) -> Deal:
    generator, others = order[0], order[1:] or order[:1]
    reviewers = [others[i % len(others)] for i in range(n_reviewers)]
    unused = [m for m in others if m not in reviewers]
    adjudicator = unused[0] if unused else next((m for m in reviewers if m != generator), generator)
    return generator, reviewers, adjudicator
