"""Colour matching against drift: long Wan shots drift in colour and contrast from segment to segment,
each segment conditioned on the last frames of the one before. A segment's frames are matched to a
reference's colour statistics (Reinhard's transfer: per channel of CIE Lab, the mean and standard
deviation of every pixel of the segment moved to the reference's), one transform per segment so the
frames within a segment keep their own motion of light. The reference is the first segment's frames
(the look the shot starts with) or the reference image.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MODES = ("off", "first_segment", "reference")
STATS_FILE = "color-reference.npy"  # kept in a job's state folder: a resumed job matches to the same look


def lab_statistics(images: list[np.ndarray]) -> np.ndarray:
    """(2, 3) float64: mean and standard deviation of L, a and b over every pixel of the images
    ((H, W, 3) uint8 RGB)."""
    lab = np.concatenate([_lab(image).reshape(-1, 3) for image in images]).astype(np.float64)
    return np.stack([lab.mean(axis=0), lab.std(axis=0)])


def match_statistics(images: list[np.ndarray], target: np.ndarray) -> list[np.ndarray]:
    """The images with one per-channel Lab transform that gives them, together, the target's mean and
    standard deviation; (H, W, 3) uint8 RGB in and out."""
    source = lab_statistics(images)
    scale = target[1] / np.maximum(source[1], 1e-6)
    matched = []
    for image in images:
        lab = (_lab(image) - source[0]) * scale + target[0]
        lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
        rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_Lab2RGB)
        matched.append(np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8))
    return matched


def _lab(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


class ColorMatch:
    """A job's colour matching: mode "first_segment" matches every later segment to segment 0's
    statistics, "reference" every segment to the reference image's."""

    def __init__(self, mode: str, reference: np.ndarray | None = None):
        if mode not in MODES[1:]:
            raise ValueError(f"unknown colour matching {mode!r}; one of {', '.join(MODES)}")
        self.mode = mode
        self.target = lab_statistics([reference]) if mode == "reference" else None

    def restore(self, state_dir: Path | None) -> None:
        """The first segment's statistics from an earlier run of the job (a resumed job)."""
        path = state_dir / STATS_FILE if state_dir is not None else None
        if self.mode == "first_segment" and path is not None and path.is_file():
            self.target = np.load(path)

    def apply(self, k: int, images: list[np.ndarray], state_dir: Path | None) -> list[np.ndarray]:
        """Segment k's frames, matched (segment 0's set the target in "first_segment" mode)."""
        if not images:
            return images
        if self.mode == "first_segment" and k == 0:
            self.target = lab_statistics(images)
            if state_dir is not None:
                state_dir.mkdir(parents=True, exist_ok=True)
                np.save(state_dir / STATS_FILE, self.target)
            return images
        if self.target is None:  # resumed without the first segment's statistics: recompute nothing, keep frames
            return images
        return match_statistics(images, self.target)
