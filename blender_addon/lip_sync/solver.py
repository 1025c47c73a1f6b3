"""Lip Sync's solver: per-frame face landmark offsets (the backend's audio2mesh; their format is
core/lip_sync_offsets.py) onto a face's shape keys. numpy only, no bpy, so it runs and is tested
outside Blender.

Coordinates: the offsets are metres in Blender axes of MediaPipe's canonical face (+X the subject's
left, -Y out of the face, +Z up), 468 landmarks, one array per frame. A face's rest landmarks (its
basis shape, through the face binding) are fitted to the canonical layout with a similarity
transform (scale, rotation, translation), which carries the offsets into the face's mesh space.
There each chosen shape key's landmark displacement at value 1 is a column of a linear model, and
each frame's weights are the bounded least-squares fit, every weight in [0, 1].
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field

import numpy as np

CANONICAL_COUNT = 468  # the landmarks audio2mesh moves (the irises are not in the canonical model)
DEFAULT_PREFIXES = ("jaw", "mouth")  # ARKit's jaw* and mouth* keys take part unless the user says otherwise
DEFAULT_SMOOTHING = 0.75  # frames (Gaussian sigma): takes the edge off frame-to-frame jitter only
MOTIONLESS = 1e-9  # a key whose landmarks move less than this (relative to the largest) is left out


class LipSyncError(Exception):
    """Lip Sync cannot run; the message names the cause and the fix."""


# --- which shape keys take part ----------------------------------------------------------

def default_shape_keys(names: list[str]) -> list[str]:
    """The jaw and mouth keys (ARKit's jawOpen, mouthClose, mouthFunnel, ...) among `names`."""
    return [name for name in names if name.lower().startswith(DEFAULT_PREFIXES)]


def chosen_shape_keys(text: str, names: list[str]) -> list[str]:
    """The keys a comma-separated list names (entries may be patterns: `mouth*`), in the mesh's order;
    empty: the default jaw and mouth keys."""
    entries = [entry.strip() for entry in text.split(",") if entry.strip()]
    if not entries:
        chosen = default_shape_keys(names)
        if not chosen:
            raise LipSyncError(f"the mesh has no jaw or mouth shape keys (jawOpen, mouthClose, ...); name the keys "
                               f"to use in Shape Keys (it has {_listing(names)})")
        return chosen
    unknown = [entry for entry in entries if not any(fnmatch.fnmatchcase(name, entry) for name in names)]
    if unknown:
        raise LipSyncError(f"the mesh has no shape key {', '.join(unknown)} (it has {_listing(names)})")
    return [name for name in names if any(fnmatch.fnmatchcase(name, entry) for entry in entries)]


def _listing(names: list[str], most: int = 12) -> str:
    if not names:
        return "none"
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


# --- geometry ----------------------------------------------------------------------------

def landmarks_from_vertices(triangles: np.ndarray, weights: np.ndarray, coordinates: np.ndarray) -> np.ndarray:
    """Landmarks (or their displacements) from per-vertex coordinates (or displacements) through a
    face binding: per landmark, the barycentric mix of its triangle's three vertices."""
    return np.einsum("nk,nkj->nj", weights, np.asarray(coordinates, dtype=np.float64)[triangles])


@dataclass(frozen=True)
class Similarity:
    """target = scale * rotation @ source + translation."""
    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def points(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation

    def vectors(self, vectors: np.ndarray) -> np.ndarray:
        return self.scale * vectors @ self.rotation.T


def fit_similarity(source: np.ndarray, target: np.ndarray) -> Similarity:
    """The least-squares similarity taking `source` points onto `target` points (Umeyama's closed
    form: no reflection)."""
    source, target = np.asarray(source, dtype=np.float64), np.asarray(target, dtype=np.float64)
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    centred_source, centred_target = source - source_mean, target - target_mean
    covariance = centred_target.T @ centred_source / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1.0
    rotation = (u * sign) @ vt
    variance = (centred_source ** 2).sum() / len(source)
    if variance <= 0:
        raise LipSyncError("the canonical layout has no extent")
    scale = float((singular * sign).sum() / variance)
    if scale <= 0:
        raise LipSyncError("the face's landmarks collapse to a point; bind the face again")
    return Similarity(scale, rotation, target_mean - scale * rotation @ source_mean)


# --- the bounded least squares -----------------------------------------------------------

def solve_box_qp(gram: np.ndarray, linear: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                 start: np.ndarray | None = None, tolerance: float = 1e-12) -> np.ndarray:
    """argmin over lower <= w <= upper of 0.5 w.G.w - linear.w, G symmetric positive definite.

    An active-set method (as Lawson and Hanson's NNLS, with an upper bound too): the variables held
    at a bound stay there while the others are solved exactly; a step that would leave the box stops
    at the first bound met, which then holds that variable; when the free ones are optimal, the held
    variable whose gradient points most into the box is released. It ends when no held variable
    wants to move: the KKT conditions hold, the answer is exact to rounding."""
    count = len(linear)
    w = np.clip(np.zeros(count) if start is None else np.asarray(start, dtype=np.float64), lower, upper)
    free = (w > lower) & (w < upper)
    scale = max(float(np.abs(linear).max()), float(np.abs(gram).max() * np.abs(upper - lower).max()), 1e-300)
    for _ in range(10 * count + 10):
        while free.any():
            index = np.flatnonzero(free)
            held = np.flatnonzero(~free)
            rhs = linear[index] - gram[np.ix_(index, held)] @ w[held]
            target = np.linalg.solve(gram[np.ix_(index, index)], rhs)
            low, high = lower[index], upper[index]
            if ((target >= low) & (target <= high)).all():
                w[index] = target
                break
            step = target - w[index]
            with np.errstate(divide="ignore", invalid="ignore"):
                room = np.where(step < 0, (low - w[index]) / step, np.where(step > 0, (high - w[index]) / step, np.inf))
            alpha = float(np.clip(room.min(), 0.0, 1.0))
            w[index] += alpha * step
            stopped = room <= alpha
            w[index[stopped]] = np.where(step[stopped] < 0, low[stopped], high[stopped])
            free[index[stopped]] = False
        gradient = gram @ w - linear
        pull = np.where(~free & (w <= lower), -gradient, 0.0) + np.where(~free & (w >= upper), gradient, 0.0)
        best = int(np.argmax(pull))
        if pull[best] <= tolerance * scale:
            break
        free[best] = True
    return w


def solve_bounded_least_squares(matrix: np.ndarray, targets: np.ndarray, lower: float = 0.0,
                                upper: float = 1.0) -> np.ndarray:
    """Per row y of `targets` (frames, M), argmin ||matrix @ w - y|| with lower <= w <= upper:
    (frames, K). Columns are scaled to unit length first (a better conditioned problem); each frame
    starts from the previous frame's answer."""
    matrix = np.asarray(matrix, dtype=np.float64)
    targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))
    norms = np.linalg.norm(matrix, axis=0)
    if (norms <= 0).any():
        raise LipSyncError("a shape key moves no landmark; leave it out")
    unit = matrix / norms
    gram = unit.T @ unit
    gram += np.eye(len(norms)) * 1e-12  # keeps exactly dependent keys solvable; far below the tolerance
    lows, highs = np.full(len(norms), lower) * norms, np.full(len(norms), upper) * norms
    solutions = np.zeros((len(targets), len(norms)))
    previous = None
    for frame, linear in enumerate(targets @ unit):
        previous = solve_box_qp(gram, linear, lows, highs, previous)
        solutions[frame] = previous
    return np.clip(solutions / norms, lower, upper)


# --- smoothing ---------------------------------------------------------------------------

def smooth_weights(weights: np.ndarray, sigma: float) -> np.ndarray:
    """A centred Gaussian moving average over frames (sigma in frames; 0: none). Edges repeat the
    first and last frame, so a constant stays constant; values stay within their range."""
    weights = np.asarray(weights, dtype=np.float64)
    if sigma <= 0 or len(weights) < 2:
        return weights.copy()
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    padded = np.pad(weights, ((radius, radius),) + ((0, 0),) * (weights.ndim - 1), mode="edge")
    return sum(tap * padded[shift:shift + len(weights)] for shift, tap in enumerate(taps))


# --- the whole solve ---------------------------------------------------------------------

@dataclass
class Solution:
    names: list[str]  # the keys solved, in the order of the weights' columns
    weights: np.ndarray  # (frames, len(names)) in [0, 1]
    motionless: list[str] = field(default_factory=list)  # chosen keys that move no landmark: not solved
    fit: Similarity | None = None  # canonical layout -> the face's mesh space
    fit_error: float = 0.0  # RMS distance of the fitted layout from the face's landmarks / the face's size
    residual: float = 0.0  # RMS landmark distance left after the solve, in the face's mesh units


def solve_lip_sync(rest: np.ndarray, displacements: dict[str, np.ndarray], offsets: np.ndarray,
                   canonical: np.ndarray, smoothing: float = DEFAULT_SMOOTHING) -> Solution:
    """Weights in [0, 1] per frame for the keys of `displacements`.

    rest: (468, 3) the face's landmarks at rest, mesh space; displacements: per key, (468, 3) how
    far its value 1 moves each landmark, mesh space; offsets: (frames, 468, 3) canonical metres;
    canonical: (468, 3) the canonical layout, metres, Blender axes. smoothing: Gaussian sigma, frames.
    """
    rest = np.asarray(rest, dtype=np.float64)[:CANONICAL_COUNT]
    canonical = np.asarray(canonical, dtype=np.float64)[:CANONICAL_COUNT]
    offsets = np.asarray(offsets, dtype=np.float64)
    if not displacements:
        raise LipSyncError("no shape keys to solve for")
    fit = fit_similarity(canonical, rest)
    size = math.sqrt(((rest - rest.mean(axis=0)) ** 2).sum(axis=1).mean())
    fit_error = float(np.sqrt(((fit.points(canonical) - rest) ** 2).sum(axis=1).mean()) / max(size, 1e-30))
    names = list(displacements)
    columns = np.stack([np.asarray(displacements[name], dtype=np.float64)[:CANONICAL_COUNT].reshape(-1)
                        for name in names], axis=1)
    norms = np.linalg.norm(columns, axis=0)
    moving = norms > MOTIONLESS * max(float(norms.max()), 1e-300)
    if not moving.any():
        raise LipSyncError(f"the shape keys {_listing(names)} move none of the face's landmarks")
    solved = [name for name, moves in zip(names, moving) if moves]
    matrix = columns[:, moving]
    targets = fit.vectors(offsets).reshape(len(offsets), -1)
    weights = solve_bounded_least_squares(matrix, targets)
    residual = float(np.sqrt(((weights @ matrix.T - targets) ** 2).reshape(len(offsets), -1, 3).sum(axis=2).mean()))
    return Solution(solved, smooth_weights(weights, smoothing), [n for n, m in zip(names, moving) if not m],
                    fit, fit_error, residual)
