"""The `warp` engine: deforms the reference image with the motion of the keypoints (CPU, no weights)."""

from __future__ import annotations

import threading
from typing import Iterator

import numpy as np

from ...warping.rig import WarpRig
from ..base import EngineError, EngineInfo, JobInputs


class WarpEngine:
    info = EngineInfo(
        name="warp",
        description="Deforms the reference image with the motion of the keypoints (CPU, no weights)",
        device="cpu", needs_weights=False,
        settings={"person": {"type": "int", "default": 0, "min": 0,
                             "help": "which person of the keypoints animates the reference image"}})

    def check(self, job: JobInputs) -> None:
        person = int(job.settings.get("person", 0))
        if person >= len(job.reference_people):
            raise EngineError(f"the reference keypoints have {len(job.reference_people)} people; "
                              f"person {person} does not exist")

    def render(self, job: JobInputs, start: int, stop: threading.Event) -> Iterator[tuple[int, np.ndarray]]:
        self.check(job)
        person_index = int(job.settings.get("person", 0))
        rig = WarpRig.build(job.reference, job.reference_people[person_index])
        for index in range(start, len(job.frames)):
            if stop.is_set():
                return
            people = job.frames[index]
            yield index, rig.pose(people[person_index] if person_index < len(people) else None)
