"""Lip Sync's solver (blender_addon/lip_sync/solver.py, numpy only) without Blender: the similarity
fit, the bounded least squares, smoothing; and the one lip-sync offsets format (core), its files and
its resampling."""

import base64
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from marionette_core import lip_sync_offsets

ROOT = Path(__file__).resolve().parents[1]


def _load_solver():
    # By path: the extension's package __init__ imports bpy, the solver module itself does not.
    spec = importlib.util.spec_from_file_location("lip_sync_solver", ROOT / "blender_addon" / "lip_sync" / "solver.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


solver = _load_solver()


def canonical_layout() -> np.ndarray:
    data = json.loads((ROOT / "rigs" / "face" / "canonical_face_mesh.json").read_text())
    raw = np.array(data["vertices"]) * 0.01
    return np.stack([raw[:, 0], -raw[:, 2], raw[:, 1]], axis=1)


def rotation(axis, degrees) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def synthetic_keys(rng, canonical, count=6):
    """Smooth local bumps around mouth-ish landmarks, like shape keys: (count, 468, 3) canonical metres."""
    centres = rng.choice(len(canonical), count, replace=False)
    keys = []
    for centre in centres:
        distance = np.linalg.norm(canonical - canonical[centre], axis=1)
        falloff = np.clip(1 - distance / 0.03, 0, 1) ** 2
        keys.append(falloff[:, None] * rng.normal(0, 0.004, 3))
    return np.array(keys)


def test_similarity_fit_recovers_scale_rotation_translation():
    canonical = canonical_layout()
    turn = rotation((0.3, 0.2, 1.0), 35)
    face = 1.7 * canonical @ turn.T + np.array([0.4, -2.0, 1.6])
    fit = solver.fit_similarity(canonical, face)
    assert abs(fit.scale - 1.7) < 1e-9
    assert np.allclose(fit.rotation, turn, atol=1e-9)
    assert np.allclose(fit.points(canonical), face, atol=1e-9)


def test_known_weights_are_solved_back_on_a_turned_scaled_face():
    rng = np.random.default_rng(3)
    canonical = canonical_layout()
    keys = synthetic_keys(rng, canonical)
    turn, scale, shift = rotation((1.0, -0.4, 0.2), 70), 42.0, np.array([3.0, 1.0, -5.0])
    rest = scale * canonical @ turn.T + shift  # the face in its own mesh units
    displacements = {f"mouth{i}": scale * key @ turn.T for i, key in enumerate(keys)}
    truth = rng.uniform(0, 1, (40, len(keys)))
    truth[::5, 0], truth[1::5, 1], truth[2::7, 2] = 0.0, 1.0, 0.0  # bounds held exactly too
    offsets = np.einsum("fk,knj->fnj", truth, keys)  # canonical metres, as the backend gives them
    solution = solver.solve_lip_sync(rest, displacements, offsets, canonical, smoothing=0.0)
    assert solution.names == list(displacements)
    assert np.abs(solution.weights - truth).max() < 1e-6
    assert solution.fit_error < 1e-9 and solution.residual < 1e-9


def brute_force_box_least_squares(matrix, target):
    """Every assignment of each variable to lower / upper / free, solved and checked: the best
    feasible one is the optimum (small K only)."""
    best, best_cost = None, np.inf
    count = matrix.shape[1]
    for states in itertools.product((0, 1, 2), repeat=count):
        w = np.zeros(count)
        held = [i for i, s in enumerate(states) if s < 2]
        for i in held:
            w[i] = float(states[i])
        free = [i for i, s in enumerate(states) if s == 2]
        if free:
            rest = target - matrix[:, held] @ w[held]
            w[free] = np.linalg.lstsq(matrix[:, free], rest, rcond=None)[0]
        if (w < -1e-12).any() or (w > 1 + 1e-12).any():
            continue
        cost = np.sum((matrix @ w - target) ** 2)
        if cost < best_cost - 1e-15:
            best, best_cost = w, cost
    return best


def test_bounded_least_squares_matches_brute_force_when_bounds_bind():
    rng = np.random.default_rng(7)
    for trial in range(30):
        matrix = rng.normal(size=(60, 4))
        matrix[:, 3] = matrix[:, 2] * 0.9 + rng.normal(scale=0.2, size=60)  # two similar keys
        unbounded = rng.uniform(-0.8, 1.8, 4)  # the unconstrained answer lies outside the box
        target = matrix @ unbounded + rng.normal(scale=0.05, size=60)
        got = solver.solve_bounded_least_squares(matrix, target[None])[0]
        expected = brute_force_box_least_squares(matrix, target)
        assert np.abs(got - expected).max() < 1e-7, (trial, got, expected)
        assert ((got >= 0) & (got <= 1)).all()


def test_exact_targets_with_weights_at_the_bounds_come_back_within_0_02():
    rng = np.random.default_rng(11)
    matrix = rng.normal(size=(1404, 8))
    truth = np.array([[0, 1, 0.5, 0, 1, 0.25, 0.75, 0], [1, 1, 1, 1, 0, 0, 0, 0], [0.3] * 8])
    got = solver.solve_bounded_least_squares(matrix, truth @ matrix.T)
    assert np.abs(got - truth).max() < 0.02
    assert np.abs(got - truth).max() < 1e-9


def test_a_key_that_moves_no_landmark_is_left_out_and_named():
    canonical = canonical_layout()
    keys = synthetic_keys(np.random.default_rng(1), canonical, 2)
    displacements = {"jawOpen": keys[0], "tongueOut": np.zeros_like(keys[0]), "mouthClose": keys[1]}
    offsets = (0.4 * keys[0] + 0.9 * keys[1])[None]
    solution = solver.solve_lip_sync(canonical, displacements, offsets, canonical, smoothing=0.0)
    assert solution.names == ["jawOpen", "mouthClose"] and solution.motionless == ["tongueOut"]
    assert np.allclose(solution.weights[0], [0.4, 0.9], atol=1e-9)


def test_smoothing_keeps_constants_and_range_and_takes_out_jitter():
    constant = np.full((20, 3), 0.37)
    assert np.allclose(solver.smooth_weights(constant, 2.0), constant)
    jitter = np.tile([[0.0], [1.0]], (10, 1))
    smoothed = solver.smooth_weights(jitter, solver.DEFAULT_SMOOTHING)
    assert smoothed.min() >= 0 and smoothed.max() <= 1
    assert np.ptp(smoothed[3:-3]) < 0.5 * np.ptp(jitter)
    assert np.array_equal(solver.smooth_weights(jitter, 0.0), jitter)


def test_default_and_chosen_shape_keys():
    names = ["Basis", "eyeBlinkLeft", "jawOpen", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "JawForward"]
    assert solver.chosen_shape_keys("", names) == ["jawOpen", "mouthSmileLeft", "mouthSmileRight", "JawForward"]
    assert solver.chosen_shape_keys("mouthSmile*, jawOpen", names) == ["jawOpen", "mouthSmileLeft", "mouthSmileRight"]
    with pytest.raises(solver.LipSyncError, match="no shape key cheekPuff"):
        solver.chosen_shape_keys("jawOpen, cheekPuff", names)
    with pytest.raises(solver.LipSyncError, match="no jaw or mouth shape keys"):
        solver.chosen_shape_keys("", ["Basis", "eyeBlinkLeft"])


def test_resampling_keeps_times_and_counts():
    frames = np.arange(30, dtype=float)[:, None, None] * np.ones((1, 468, 3))  # value = 30 fps frame index
    offsets = lip_sync_offsets.Offsets(frames, 30.0, 1.0)
    for rate in (24.0, 25.0, 30.0, 60.0):
        resampled = offsets.at_rate(rate)
        assert len(resampled) == round(rate)
        expected = np.minimum(np.arange(len(resampled)) * 30.0 / rate, 29)
        assert np.allclose(resampled[:, 0, 0], expected)


def test_one_resampling_for_both_sides():
    """The backend's float32 offsets and the extension's float64 ones go through the same function:
    computed in float64, returned in their own dtype; no frames asked, or none given, is no frames."""
    frames = np.random.default_rng(1).normal(size=(7, 468, 3)).astype(np.float32)
    as_float32 = lip_sync_offsets.resample_frames(frames, 30.0, 24.0, 6)
    as_float64 = lip_sync_offsets.resample_frames(frames.astype(np.float64), 30.0, 24.0, 6)
    assert as_float32.dtype == np.float32 and as_float64.dtype == np.float64
    assert np.array_equal(as_float32, as_float64.astype(np.float32))
    assert lip_sync_offsets.resample_frames(frames, 30.0, 24.0, 0).shape == (0, 468, 3)
    assert lip_sync_offsets.resample_frames(frames[:0], 30.0, 24.0, 5).shape == (0, 468, 3)


def write_json(path, offsets, fps, seconds=None):
    data = np.ascontiguousarray(offsets, dtype="<f4")
    path.write_text(json.dumps({"format": "marionette-lip-sync", "version": 1, "fps": fps, "frames": len(data),
                                "shape": list(data.shape), "dtype": "<f4", "seconds": seconds,
                                "offsets": base64.b64encode(data.tobytes()).decode()}))


def test_offsets_files_are_read_and_bad_ones_refused(tmp_path):
    offsets = np.random.default_rng(0).normal(size=(5, 468, 3)).astype(np.float32)
    write_json(tmp_path / "a.json", offsets, 25.0, 0.2)
    read = lip_sync_offsets.read_file(tmp_path / "a.json")
    assert read.fps == 25.0 and read.seconds == 0.2 and np.array_equal(read.offsets, offsets)
    np.savez(tmp_path / "b.npz", offsets=offsets, fps=24.0)
    assert np.array_equal(lip_sync_offsets.read_file(tmp_path / "b.npz").offsets, offsets)
    write_json(tmp_path / "c.json", offsets[:, :400], 25.0)
    with pytest.raises(lip_sync_offsets.OffsetsError, match="expected"):
        lip_sync_offsets.read_file(tmp_path / "c.json")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(lip_sync_offsets.OffsetsError, match="cannot read"):
        lip_sync_offsets.read_file(tmp_path / "d.json")
    with pytest.raises(lip_sync_offsets.OffsetsError, match="no offsets file"):
        lip_sync_offsets.read_file(tmp_path / "missing.json")
