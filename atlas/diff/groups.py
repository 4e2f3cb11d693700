"""Splits and merges: one feature of one SAE whose decoder direction is a non-negative combination of several
features of the other SAE (and, with shared images, whose activation is their activations' sum)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from atlas.diff.coactivation import Group
from atlas.diff.decoder_match import Pairs


@dataclass(frozen=True)
class GroupFit:
    """A proposed group: the whole, its parts, their fit coefficients and how well they fit."""

    group: Group  # weights: each part's decoder norm (its activation in embedding units)
    coefficients: np.ndarray  # float64 [p]: the non-negative fit of the whole's unit direction
    part_cosines: np.ndarray  # float64 [p]: each part's decoder cosine to the whole
    fit_cosine: float  # cosine between the whole's unit direction and the fit
    best_part_cosine: float  # the best single candidate's cosine: a split must fit better than any one part
    correlation: float = float("nan")  # the whole's activation against the parts' sum (with shared images)


def nonnegative_fit(target_d: np.ndarray, parts_pd: np.ndarray, tol: float = 1e-10) -> tuple[np.ndarray, float]:
    """Least squares of `target` by the rows of `parts` with coefficients >= 0 (Lawson and Hanson's active-set
    method); (coefficients, cosine between the fit and the target)."""
    a = parts_pd.astype(np.float64).T  # [d, p]
    y = target_d.astype(np.float64)
    p = a.shape[1]
    x, passive = np.zeros(p), np.zeros(p, bool)
    for _ in range(3 * p + 1):
        grad = a.T @ (y - a @ x)
        if passive.all() or grad[~passive].max(initial=-np.inf) <= tol:
            break
        passive[np.flatnonzero(~passive)[np.argmax(grad[~passive])]] = True
        while True:
            z = np.zeros(p)
            z[passive] = np.linalg.lstsq(a[:, passive], y, rcond=None)[0]
            if (z[passive] > tol).all():
                x = z
                break
            neg = passive & (z <= tol)
            alpha = np.min(x[neg] / np.maximum(x[neg] - z[neg], 1e-300))
            x = x + alpha * (z - x)
            passive &= x > tol
            x[~passive] = 0.0
    fit = a @ x
    norm = np.linalg.norm(fit) * np.linalg.norm(y)
    return x, float(fit @ y / norm) if norm > 0 else 0.0


def propose_groups(
    candidates: Pairs,
    whole_unit_fd: np.ndarray,
    part_unit_fd: np.ndarray,
    part_norms_f: np.ndarray,
    free_wholes: np.ndarray,
    free_parts: np.ndarray,
    max_parts: int,
    min_share: float,
    min_fit_cosine: float,
    min_gain: float,
) -> list[GroupFit]:
    """Every free whole whose free candidate parts (`candidates.a` = wholes, `.b` = parts, as oriented by
    the caller) fit its direction at cosine >= `min_fit_cosine`, better by `min_gain` than its best single
    part, with at least two parts that each carry `min_share` of the coefficients."""
    keep = free_wholes[candidates.a] & free_parts[candidates.b]
    wholes, parts, cos = candidates.a[keep], candidates.b[keep], candidates.cosine[keep]
    order = np.lexsort((-cos, wholes))
    wholes, parts, cos = wholes[order], parts[order], cos[order]
    starts = np.flatnonzero(np.r_[True, wholes[1:] != wholes[:-1]]) if len(wholes) else np.zeros(0, int)
    out = []
    for s, e in zip(starts, np.r_[starts[1:], len(wholes)], strict=True):
        if e - s < 2:
            continue
        ids = parts[s : min(e, s + max_parts)]
        fit = _fit(int(wholes[s]), ids, float(cos[s]), whole_unit_fd, part_unit_fd, min_share)
        if fit is not None and fit.fit_cosine >= min_fit_cosine and fit.fit_cosine >= fit.best_part_cosine + min_gain:
            weights = part_norms_f[fit.group.parts].astype(np.float64)
            out.append(replace(fit, group=replace(fit.group, weights=weights)))
    return out


def _fit(
    whole: int, ids: np.ndarray, best: float, whole_unit_fd: np.ndarray, part_unit_fd: np.ndarray, min_share: float
) -> GroupFit | None:
    """Fit the whole by its candidate parts, drop parts under `min_share` of the coefficients, refit."""
    target = whole_unit_fd[whole]
    coef, _ = nonnegative_fit(target, part_unit_fd[ids])
    total = coef.sum()
    if total <= 0:
        return None
    ids = ids[coef / total >= min_share]
    if len(ids) < 2:
        return None
    coef, fit_cos = nonnegative_fit(target, part_unit_fd[ids])
    ids, coef = ids[coef > 0], coef[coef > 0]
    if len(ids) < 2:
        return None
    part_cos = part_unit_fd[ids].astype(np.float64) @ target.astype(np.float64)
    return GroupFit(Group(whole, ids, np.ones(len(ids))), coef, part_cos, fit_cos, best)


def assign_groups(fits: list[GroupFit], n_parts: int) -> list[GroupFit]:
    """Greedy, best fit first: a part belongs to at most one group."""
    used = np.zeros(n_parts, bool)
    out = []
    for fit in sorted(fits, key=lambda f: -f.fit_cosine):
        if used[fit.group.parts].any():
            continue
        used[fit.group.parts] = True
        out.append(fit)
    return out
