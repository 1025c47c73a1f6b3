"""A real `marionette serve` process for the engine end-to-end tests, and what they ask of it: the
frames a job streams, decoded."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

from marionette_core.client import BackendClient

from marionette.images import decode_image, encode_png


class Server:
    """A `marionette serve` process (conftest's start_backend) and what the tests ask of it. After a
    kill, `start()` runs a new one on the same store. Its log is drained, so a chatty backend never
    blocks on a full pipe."""

    def __init__(self, start_backend):
        self._start_backend = start_backend
        self.log: list[str] = []
        self.start()

    def start(self) -> None:
        self.process = self._start_backend()
        stderr = self.process.process.stderr
        threading.Thread(target=lambda: self.log.extend(stderr), daemon=True).start()

    @property
    def store(self) -> Path:
        return self.process.store

    def client(self) -> BackendClient:
        client = BackendClient("127.0.0.1", self.process.port, self.process.token, timeout=120)
        client.connect()
        return client

    def stored_jobs(self) -> set[str]:
        return {p.name for p in self.store.iterdir() if not p.name.startswith(".")}

    def status(self, job_id: str) -> dict:
        return json.loads((self.store / job_id / "status.json").read_text())

    def submit_blocking_at(self, state_file: str, job: dict, reference_png: bytes, tracks: dict):
        """Submit a job whose engine will block when it writes `state_file` (a named pipe put in the
        job's state folder before the job starts: a long warp job holds the queue meanwhile), so the
        test can kill the backend at that point. The client and the accepted answer."""
        import synthetic

        blocking = self.client()
        blocker = blocking.submit(*synthetic.warp_job(400))["job_id"]
        client = self.client()
        accepted = client.submit(job, reference_png, tracks)
        state = self.store / accepted["job_id"] / "state"
        state.mkdir(exist_ok=True)
        os.mkfifo(state / state_file)
        blocking.cancel(blocker)
        blocking.close()
        return client, accepted

    def restart_after_kill(self, job_id: str, state_file: str):
        """Kill -9 the backend (blocked at `state_file`), start a new one on the same store and follow
        the job to its end from frame 0: collect()'s frames, order and end message."""
        self.process.kill()
        (self.store / job_id / "state" / state_file).unlink()
        self.start()
        client = self.client()
        client.attach(job_id, from_index=0)
        return collect(client, job_id)


def collect(client, job_id, until=None):
    """A job's frame messages as {index: {attachment name: bytes}}, the indices in the order they
    came, and the message that ended the stream (None when `until` frames came first)."""
    frames, order = {}, []
    while True:
        message = client.receive()
        header = message.header
        if header.get("job_id") != job_id:
            continue
        if message.type == "frame":
            order.append(header["index"])
            frames[header["index"]] = {meta["name"]: data for meta, data in
                                       zip(header["attachments"], message.attachments)}
            if until is not None and len(frames) >= until:
                return frames, order, None
        elif message.type in ("done", "cancelled"):
            return frames, order, message


def images(frames: dict) -> list[np.ndarray]:
    return [decode_image(frames[index]["frame.png"]) for index in sorted(frames)]


def pngs(arrays) -> list[bytes]:
    return [encode_png(np.ascontiguousarray(array)) for array in arrays]


def read_folder(folder: Path) -> list[np.ndarray]:
    return [decode_image(path.read_bytes()) for path in sorted(folder.glob("*.png"))]


def assert_same_frames(height: int, width: int, got, expected) -> None:
    """Frame for frame equal, of the size asked for, and pictures rather than a constant."""
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape == (height, width, 3) and np.array_equal(a, b), f"frame {index} differs"
    assert len(np.unique(np.stack(got))) > 50
