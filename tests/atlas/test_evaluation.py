import numpy as np

from atlas.evaluation import auroc_matrix, probe_auroc


def _auroc_by_pairs(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties, by brute force."""
    pos, neg = scores[positive], scores[~positive]
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return (greater + 0.5 * ties) / (len(pos) * len(neg))


def test_auroc_matches_the_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(200, 5)) * (rng.random((200, 5)) < 0.4)  # sparse: many tied zeros
    positive = rng.random(200) < 0.3
    scores[positive, 2] += 2.0
    got = auroc_matrix(scores, positive)
    want = [_auroc_by_pairs(scores[:, f], positive) for f in range(5)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[2] == max(got) and got[2] > 0.8


def test_auroc_extremes():
    positive = np.array([True, True, False, False])
    scores = np.array([[3.0, 0.0], [2.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(auroc_matrix(scores, positive), [1.0, 0.5])
    assert np.isnan(auroc_matrix(scores, np.zeros(4, dtype=bool))).all()


def test_probe_auroc_sees_linear_codes_and_not_others():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 6))
    test = np.arange(600) % 3 == 0
    linear = x[:, 0] - 0.5 * x[:, 3] > 0.2
    xor = (x[:, 1] > 0) ^ (x[:, 2] > 0)  # encoded, but not linearly
    assert probe_auroc(x, linear, test) > 0.98
    assert abs(probe_auroc(x, xor, test) - 0.5) < 0.1
    assert abs(probe_auroc(x, rng.random(600) < 0.3, test) - 0.5) < 0.1
    assert np.isnan(probe_auroc(x, np.zeros(600, dtype=bool), test))
