"""Generate's worker thread: it owns the backend connection, submits the job (or re-attaches to it),
writes every frame it receives to `<output_dir>/frames/<frame:06d>.png` and reports to the main
thread through a queue. It never touches bpy."""

from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

from ..connection import backend
from ..connection.backend import BackendSettings
from ..core.client import BackendError

POLL_SECONDS = 0.25  # how often the worker looks up from a quiet socket to see if it should stop


@dataclass
class StreamPlan:
    """What the worker thread needs to connect; plain data, no bpy."""
    backend: BackendSettings
    frames_dir: Path
    resume_job_id: str | None = None  # re-attach to this job instead of submitting one
    resume_from: int = 0
    auto_start: bool = False


@dataclass
class Submission:
    """A job for the worker to submit, once the control maps are drawn; plain data, no bpy."""
    job: dict
    reference_png: bytes
    track_folders: dict[str, Path]  # track name -> folder of <frame:06d>.png
    audio: bytes | None = None  # the frame range's sound, a 16 kHz mono WAV


def stream(plan: StreamPlan, events: queue.Queue, submissions: queue.Queue, stop: threading.Event) -> None:
    """Connect (starting a local backend if allowed); then re-attach, or wait for the job the main
    thread prepares and submit it; then write every frame that arrives until the job ends.

    Events put on the queue: ("capabilities", dict), ("accepted", job_id, total), ("frame", index,
    [names of the engine's other outputs]), ("done",), ("cancelled",), ("error", message)."""
    client = None
    try:
        client = backend.connect(plan.backend, auto_start=plan.auto_start)
        events.put(("capabilities", client.capabilities))
        if plan.resume_job_id:
            attached = client.attach(plan.resume_job_id, plan.resume_from)
            job_id, total = attached["job_id"], attached["total"]
        else:
            submission = _wait_for(submissions, stop)
            if submission is None:
                return  # cancelled, or the control maps failed: the main thread has said so
            accepted = client.submit(submission.job, submission.reference_png, _read_tracks(submission),
                                     submission.audio)
            job_id, total = accepted["job_id"], accepted["total"]
        events.put(("accepted", job_id, total))
        plan.frames_dir.mkdir(parents=True, exist_ok=True)
        client.sock.settimeout(POLL_SECONDS)
        cancel_sent = False
        while True:
            if stop.is_set() and not cancel_sent:
                client.cancel(job_id)
                cancel_sent = True
            try:
                message = client.receive()
            except BackendError as error:
                if error.code == "timeout":
                    continue
                raise
            if message.type == "frame" and message.header["job_id"] == job_id:
                events.put(("frame", message.header["index"], _write_frame(plan.frames_dir, message)))
            elif message.type in ("done", "cancelled") and message.header.get("job_id") == job_id:
                events.put((message.type,))
                break
    except BackendError as error:
        events.put(("error", _explain(error)))
    except OSError as error:
        events.put(("error", f"cannot write frames to {plan.frames_dir}: {error.strerror or error}"))
    finally:
        if client is not None:
            client.close()


def _write_frame(frames_dir: Path, message) -> list[str]:
    """The frame and the engine's other outputs with it (each in <output>/<name>/); their names."""
    frame = message.header["frame"]
    extras = []
    for meta, data in zip(message.header.get("attachments", [])[1:], message.attachments[1:]):
        name = meta["name"].removesuffix(".png")  # an engine output beside the frame
        folder = frames_dir.parent / name
        folder.mkdir(exist_ok=True)
        _write_atomically(folder / f"{frame:06d}.png", data)
        extras.append(name)
    _write_atomically(frames_dir / f"{frame:06d}.png", message.attachments[0])
    return extras


def _wait_for(submissions: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return submissions.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
    return None


def _read_tracks(submission: Submission) -> dict[str, list[bytes]]:
    """Each track's PNGs, one per job frame, in frame order."""
    tracks = {}
    for name, folder in submission.track_folders.items():
        try:
            tracks[name] = [(folder / f"{frame:06d}.png").read_bytes() for frame in submission.job["frames"]]
        except OSError as error:
            raise BackendError("bad_request", f"the '{name}' images are missing in {folder}: "
                                              f"{error.strerror or error}") from None
    return tracks


def _explain(error: BackendError) -> str:
    if error.code == "connection":
        return f"{error}; the frames received so far are kept: press Resume when the backend is back"
    if error.code == "busy":
        return f"{error} (nothing was sent; press Generate again)"
    return str(error)


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
