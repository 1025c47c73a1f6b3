"""The job store: one folder per job with its inputs, its status, and its frames as they are made.

    <store>/<job id>/job.json              engine, settings, size, frame numbers, output names
                     inputs/reference.png
                     inputs/reference_pose.json
                     inputs/poses/<index:06d>.json
                     inputs/tracks/<name>/<index:06d>.png   (the image tracks the engine declares)
                     inputs/audio              (engines that take sound: the file as sent)
                     state/                    (what an engine keeps to resume exactly)
                     status.json           {"state": queued|running|done|failed|cancelled, ...}
                     frames/<index:06d>.png
                     outputs/<name>/<index:06d>.png   (an engine's other per-frame outputs)

A job folder appears whole (written aside, then renamed into place); status and frames are written
to a temporary name and renamed, so a reader or a restarted backend never sees half a file. The
frames present are exactly the frames done, so a restarted backend resumes from the first missing one.
Job ids are 32 lowercase hex digits, checked before any path is built from them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path

from marionette_core.image_header import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE

from .engines.base import EngineInfo, JobInputs
from .job_inputs import JobError, build_inputs, check_track_name

JOB_ID = re.compile(r"[0-9a-f]{32}")
UNFINISHED = ("queued", "running")
FINISHED = ("done", "failed", "cancelled")


class UnknownJobError(JobError):
    """No such job, or not a job id at all."""


def check_job_id(job_id) -> str:
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise UnknownJobError(f"not a job id: {str(job_id)[:80]!r}")
    return job_id


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


class JobStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(".incoming-*"):  # a submit interrupted by a crash
            shutil.rmtree(leftover, ignore_errors=True)

    def folder(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)

    def require(self, job_id) -> str:
        if not self.exists(job_id):
            raise UnknownJobError(f"no job {str(job_id)[:40]!r} on this backend")
        return job_id

    def exists(self, job_id: str) -> bool:
        return JOB_ID.fullmatch(str(job_id)) is not None and (self.root / job_id / "job.json").is_file()

    def create(self, spec: dict, reference_png: bytes, reference_pose: dict, poses: list[dict],
               tracks: dict[str, list[bytes]], audio: bytes | None = None) -> str:
        """Store a new job (queued) and return its id. Track names are checked (TRACK_NAME) first."""
        job_id = uuid.uuid4().hex
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            (incoming / "inputs" / "poses").mkdir(parents=True)
            (incoming / "frames").mkdir()
            (incoming / "inputs" / "reference.png").write_bytes(reference_png)
            (incoming / "inputs" / "reference_pose.json").write_text(json.dumps(reference_pose))
            for index, pose in enumerate(poses):
                (incoming / "inputs" / "poses" / f"{index:06d}.json").write_text(json.dumps(pose))
            for name, images in tracks.items():
                folder = incoming / "inputs" / "tracks" / check_track_name(name)
                folder.mkdir(parents=True)
                for index, data in enumerate(images):
                    (folder / f"{index:06d}.png").write_bytes(data)
            if audio is not None:
                (incoming / "inputs" / "audio").write_bytes(audio)
            (incoming / "state").mkdir()
            (incoming / "job.json").write_text(json.dumps({**spec, "id": job_id, "created": time.time()}))
            (incoming / "status.json").write_text(json.dumps({"state": "queued", "updated": time.time()}))
            incoming.rename(self.root / job_id)
        except BaseException:
            shutil.rmtree(incoming, ignore_errors=True)
            raise
        return job_id

    def spec(self, job_id: str) -> dict:
        return json.loads((self.folder(job_id) / "job.json").read_text())

    def status(self, job_id: str) -> dict:
        return json.loads((self.folder(job_id) / "status.json").read_text())

    def set_status(self, job_id: str, state: str, **extra) -> None:
        data = {"state": state, "updated": time.time(), **extra}
        write_atomically(self.folder(job_id) / "status.json", json.dumps(data).encode())

    def frame_path(self, job_id: str, index: int) -> Path:
        return self.folder(job_id) / "frames" / f"{index:06d}.png"

    def write_frame(self, job_id: str, index: int, png: bytes, extras: dict[str, bytes] | None = None) -> None:
        """A frame and the engine's other outputs for it; the frame last, so a frame on disk has its extras."""
        for name, data in (extras or {}).items():
            folder = self.folder(job_id) / "outputs" / check_track_name(name)
            folder.mkdir(parents=True, exist_ok=True)
            write_atomically(folder / f"{index:06d}.png", data)
        write_atomically(self.frame_path(job_id, index), png)

    def frame_extras(self, job_id: str, index: int) -> dict[str, Path]:
        """The engine's other outputs stored for a frame, by name."""
        outputs = self.folder(job_id) / "outputs"
        if not outputs.is_dir():
            return {}
        return {folder.name: folder / f"{index:06d}.png" for folder in sorted(outputs.iterdir())
                if (folder / f"{index:06d}.png").is_file()}

    def first_missing_frame(self, job_id: str) -> int:
        total = len(self.spec(job_id)["frames"])
        index = 0
        while index < total and self.frame_path(job_id, index).is_file():
            index += 1
        return index

    def job_ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if JOB_ID.fullmatch(p.name) and (p / "job.json").is_file())

    def unfinished(self) -> list[str]:
        """Jobs a restarted backend must take up again, oldest first."""
        jobs = [(self.spec(j).get("created", 0), j) for j in self.job_ids() if self.status(j)["state"] in UNFINISHED]
        for _created, job_id in jobs:
            self.discard_partial_writes(job_id)
        return [job_id for _created, job_id in sorted(jobs)]

    def discard_partial_writes(self, job_id: str) -> None:
        """Temporary files a killed backend left mid-write; the files they were to replace are whole or absent."""
        for leftover in self.folder(job_id).rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)

    def load_inputs(self, job_id: str, info: EngineInfo | None = None, max_side: int = DEFAULT_MAX_SIDE,
                    max_pixels: int = DEFAULT_MAX_PIXELS) -> JobInputs:
        """A stored job's inputs; its track images stay on disk until an engine reads each one."""
        folder = self.folder(job_id)
        spec = self.spec(job_id)
        poses = [json.loads(p.read_text()) for p in sorted((folder / "inputs" / "poses").glob("*.json"))]
        tracks_folder = folder / "inputs" / "tracks"
        tracks = {track.name: sorted(track.glob("*.png")) for track in sorted(tracks_folder.iterdir())} \
            if tracks_folder.is_dir() else {}
        audio = folder / "inputs" / "audio"
        return build_inputs((folder / "inputs" / "reference.png").read_bytes(),
                            json.loads((folder / "inputs" / "reference_pose.json").read_text()),
                            poses, tracks, spec.get("width"), spec.get("height"), spec.get("settings", {}),
                            info=info, text=spec.get("text", {}), audio=audio if audio.is_file() else None,
                            fps=spec.get("fps", 24.0), state_dir=folder / "state", max_side=max_side,
                            max_pixels=max_pixels)
