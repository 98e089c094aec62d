"""FP-Growth against brute-force enumeration of frequent itemsets."""
from __future__ import annotations

import itertools
import random

import pytest

from graphs.mirage.mining import fp_growth, support_threshold


def brute_force(transactions: list[set[int]], min_support: int) -> dict[frozenset[int], int]:
    items = sorted(set().union(*transactions))
    out = {}
    for k in range(1, len(items) + 1):
        for combo in itertools.combinations(items, k):
            s = sum(1 for t in transactions if set(combo) <= t)
            if s >= min_support:
                out[frozenset(combo)] = s
    return out


@pytest.mark.parametrize("seed", range(6))
def test_fp_growth_equals_brute_force(seed):
    rng = random.Random(seed)
    for _ in range(25):
        transactions = [set(rng.sample(range(9), rng.randint(0, 7))) for _ in range(rng.randint(1, 14))]
        min_support = rng.randint(1, 5)
        assert fp_growth(transactions, min_support) == brute_force(transactions, min_support)


def test_textbook_example():
    """Han et al. (2000), Table 1 with minimum support 3."""
    t = [list("facdgimp"), list("abcflmo"), list("bfhjo"), list("bcksp"), list("afcelpmn")]
    result = fp_growth([[ord(c) for c in row] for row in t], 3)
    named = {"".join(sorted(chr(i) for i in s)): n for s, n in result.items()}
    assert named["acfm"] == 3 and named["f"] == 4 and named["cp"] == 3
    assert "bf" not in named and len(named) == 18


def test_duplicates_in_a_transaction_count_once_and_max_len():
    assert fp_growth([[1, 1, 2], [1]], 2) == {frozenset({1}): 2}
    limited = fp_growth([[1, 2, 3]] * 3, 1, max_len=2)
    assert max(len(s) for s in limited) == 2 and len(limited) == 6


def test_support_threshold_counts_and_fractions():
    assert support_threshold(150, 600) == 150
    assert support_threshold(0.3, 10) == 3 and support_threshold(0.25, 10) == 3 and support_threshold(0.01, 10) == 1
    with pytest.raises(ValueError):
        support_threshold(0, 10)
    with pytest.raises(ValueError):
        fp_growth([[1]], 0)


def test_max_itemsets_guard():
    from graphs.mirage.mining import TooManyItemsets

    with pytest.raises(TooManyItemsets):
        fp_growth([list(range(12))] * 3, 1, max_itemsets=1000)  # 4095 frequent sets
