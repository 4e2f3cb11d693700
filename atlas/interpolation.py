"""Interpolation between two embeddings (or two noise latents), and unCLIP text diffs.

- linear: (1 - g) a + g b
- normalized linear: the linear mix divided by sqrt((1 - g)^2 + g^2), so a mix of two independent
  unit-variance Gaussians keeps unit variance (what diffusion noise must have);
- slerp: the direction turns at a constant angular rate from a to b while the norm moves linearly from
  ||a|| to ||b||. Parallel vectors fall back to a normalised linear path; anti-parallel ones (where the great
  circle is not unique) turn through a fixed orthogonal direction, so the result is always finite.
- unCLIP text diff: z_d = normalize(z_text - z_text0), applied as slerp(z_image, z_d, theta) with theta in
  [0, 0.5]; z_d is put at the image embedding's norm first, because the decoder takes raw image embeddings.

Every function works on arrays of any shape (a latent [C, h, w] is treated as one flat vector).
"""

from __future__ import annotations

import numpy as np

from atlas.errors import AtlasError

_PARALLEL_EPS = 1e-6


def linear(a: np.ndarray, b: np.ndarray, g: float) -> np.ndarray:
    """(1 - g) a + g b."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return ((1 - g) * a64 + g * b64).astype(np.float32)


def normalized_linear(a: np.ndarray, b: np.ndarray, g: float) -> np.ndarray:
    """((1 - g) a + g b) / sqrt((1 - g)^2 + g^2)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (((1 - g) * a64 + g * b64) / np.sqrt((1 - g) ** 2 + g**2)).astype(np.float32)


def _orthogonal_unit(u: np.ndarray) -> np.ndarray:
    """A unit vector orthogonal to unit vector u (Gram-Schmidt on the axis where u is smallest)."""
    e = np.zeros_like(u)
    e[np.argmin(np.abs(u))] = 1.0
    o = e - (e @ u) * u
    return o / np.linalg.norm(o)


def slerp(a: np.ndarray, b: np.ndarray, g: float) -> np.ndarray:
    """Spherical interpolation: angle g * angle(a, b) from a towards b, norm (1 - g)||a|| + g||b||."""
    shape = np.shape(a)
    a64, b64 = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    if na == 0 or nb == 0:  # no direction to turn from or to
        return linear(a, b, g)
    ua, ub = a64 / na, b64 / nb
    cos = float(np.clip(ua @ ub, -1.0, 1.0))
    norm = (1 - g) * na + g * nb
    if cos > 1 - _PARALLEL_EPS:  # parallel: the directions barely differ
        u = (1 - g) * ua + g * ub
        u /= np.linalg.norm(u)
    elif cos < -1 + _PARALLEL_EPS:  # anti-parallel: any great circle joins them; take a fixed one
        angle = g * np.pi
        u = np.cos(angle) * ua + np.sin(angle) * _orthogonal_unit(ua)
    else:
        omega = np.arccos(cos)
        u = (np.sin((1 - g) * omega) * ua + np.sin(g * omega) * ub) / np.sin(omega)
    return (norm * u).reshape(shape).astype(np.float32)


METHODS = {"linear": linear, "normalized_linear": normalized_linear, "slerp": slerp}


def interpolate(a: np.ndarray, b: np.ndarray, fractions: list[float], method: str = "slerp") -> np.ndarray:
    """[len(fractions), *a.shape]: `method` (linear, normalized_linear, slerp) at each fraction g."""
    if method not in METHODS:
        raise AtlasError(f"interpolation method {method!r}: use one of {', '.join(METHODS)}")
    fn = METHODS[method]
    return np.stack([fn(a, b, float(g)) for g in fractions])


def text_diff(z_text: np.ndarray, z_text0: np.ndarray) -> np.ndarray:
    """unCLIP's text diff: normalize(z_text - z_text0), computed on the normalised text embeddings."""
    t = np.asarray(z_text, np.float64)
    t0 = np.asarray(z_text0, np.float64)
    d = t / np.linalg.norm(t) - t0 / np.linalg.norm(t0)
    n = np.linalg.norm(d)
    if n < 1e-12:
        raise AtlasError("the two texts have the same embedding: their difference has no direction")
    return (d / n).astype(np.float32)


def apply_text_diff(z_image: np.ndarray, z_d: np.ndarray, theta: float) -> np.ndarray:
    """slerp(z_image, z_d, theta), with z_d taken at the image embedding's norm (so the norm is kept)."""
    z = np.asarray(z_image, np.float64)
    d = np.asarray(z_d, np.float64)
    return slerp(z, d / np.linalg.norm(d) * np.linalg.norm(z), theta)


def text_diff_strip(z_image: np.ndarray, z_d: np.ndarray, thetas: list[float]) -> np.ndarray:
    """[len(thetas), d]: the image embedding turned towards the text diff by each theta (0 = unchanged)."""
    return np.stack([apply_text_diff(z_image, z_d, float(t)) for t in thetas])
