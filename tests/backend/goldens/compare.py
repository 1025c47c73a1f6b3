"""Comparing a Marionette run with a golden recorded from an original implementation."""

from __future__ import annotations

import numpy as np

# float32 arithmetic done in another order (other kernels, batch shapes) differs by a few units of
# the last place per operation; through a UNet that stays within this fraction of the values' size.
FLOAT32_ROUNDING = 1e-4


def difference(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(max, mean) absolute difference."""
    assert got.shape == expected.shape, (got.shape, expected.shape)
    delta = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return float(delta.max()), float(delta.mean())


def assert_within_rounding(name: str, got: np.ndarray, expected: np.ndarray, exact: bool = False) -> None:
    worst, _mean = difference(got, expected)
    bound = 0.0 if exact else FLOAT32_ROUNDING * max(1.0, float(np.abs(expected).max()))
    assert worst <= bound, f"{name}: differs from the original by {worst:.3g} (allowed {bound:.3g})"


def assert_frames_within_one_level(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """uint8 frames: the original's conversion (truncation) of nearly equal floats may land one
    level apart, never more. Returns (max, mean)."""
    worst, mean = difference(got, expected)
    assert worst <= 1, f"frames differ from the original's by up to {worst:.0f} levels (mean {mean:.3g})"
    return worst, mean


def golden_calls(golden, name: str) -> list:
    """The recorded calls of `name`, in order: arrays, or lists of arrays for multi-part calls."""
    calls = {}
    for key in golden.files:
        parts = key.split("/")
        if parts[0] != name:
            continue
        if len(parts) == 2:
            calls[int(parts[1])] = golden[key]
        else:
            calls.setdefault(int(parts[1]), {})[int(parts[2])] = golden[key]
    return [calls[i] if not isinstance(calls[i], dict) else [calls[i][e] for e in sorted(calls[i])]
            for i in sorted(calls)]


STEP_PARTS = ("guided prediction", "latents in", "latents out")


def assert_steps_within_rounding(got: list, golden) -> None:
    """Scheduler steps, recorded as [prediction, latents in, latents out] (Recorder.watch_steps);
    the golden keeps the input latents of the first step only (the others are the previous output)."""
    steps = len({key.split("/")[1] for key in golden.files if key.startswith("step/")})
    assert len(got) == steps, f"{len(got)} scheduler steps, the original took {steps}"
    for step, ours in enumerate(got):
        for part, name in enumerate(STEP_PARTS):
            key = f"step/{step}/{part}"
            if key in golden.files:
                assert_within_rounding(f"step {step} {name}", ours[part], golden[key])
