"""Jobs while the server runs: the queue, the worker that runs them one at a time (one device), and
the streams that send a job's frames to every client following it.

Frames go to the job store as the engine makes them; each stream sends a job's frames from the
store in order, at its client's pace: a slow client holds back nobody, and one that drops and
re-attaches gets exactly the frames it missed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from marionette_core.protocol import error_message

from .engines import EngineError, EngineRegistry
from .images import ImageError, encode_png
from .job_inputs import JobError, Limits
from .jobs import FINISHED, JobStore

log = logging.getLogger("marionette.server")


@dataclass
class LiveJob:
    """A job's in-memory state while the server runs: who waits for it and how to stop it."""
    job_id: str
    total: int
    state: str
    stop: threading.Event = field(default_factory=threading.Event)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    version: int = 0  # bumped on every new frame or state change
    error: str | None = None


class JobRunner:
    def __init__(self, store: JobStore, engines: EngineRegistry, limits: Limits):
        self.store, self.engines, self.limits = store, engines, limits
        self.jobs: dict[str, LiveJob] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        for job_id in self.store.unfinished():  # a restarted backend takes its jobs up again
            spec = self.store.spec(job_id)
            self.store.set_status(job_id, "queued")
            log.info("resuming job %s from frame %d", job_id, self.store.first_missing_frame(job_id))
            self.enqueue(job_id, len(spec["frames"]))
        self._worker = asyncio.create_task(self._run_jobs())

    def close(self) -> None:
        for job in self.jobs.values():
            job.stop.set()
        if self._worker:
            self._worker.cancel()

    def enqueue(self, job_id: str, total: int) -> LiveJob:
        live = self.jobs[job_id] = LiveJob(job_id, total, "queued")
        self.queue.put_nowait(job_id)
        return live

    async def cancel(self, job_id: str) -> None:
        live = self.jobs.get(job_id)
        if live is not None and live.state not in FINISHED:
            live.stop.set()
            if live.state == "queued":
                await self._finish(live, "cancelled")

    # --- streaming ---------------------------------------------------------------------------

    async def stream_frames(self, job_id: str, index: int, send) -> None:
        """Send frames index.. from the store as they appear, then how the job ended."""
        spec = self.store.spec(job_id)
        total, frames = len(spec["frames"]), spec["frames"]
        live = self.jobs.get(job_id)
        reported_state = None
        try:
            while True:
                seen = live.version if live is not None else None
                if live is not None and live.state != reported_state and live.state not in FINISHED:
                    reported_state = live.state  # queued -> running: the client can say so
                    await send({"type": "progress", "job_id": job_id, "state": live.state, "done": index,
                                "total": total})
                path = self.store.frame_path(job_id, index) if index < total else None
                if path is not None and path.is_file():
                    attachments = await asyncio.to_thread(self._frame_attachments, job_id, index, path)
                    await send({"type": "frame", "job_id": job_id, "index": index, "frame": frames[index],
                                "total": total}, attachments)
                    index += 1
                    continue
                state = live.state if live is not None else self.store.status(job_id)["state"]
                if live is None or state in FINISHED:
                    await send(self._ending(job_id, state, live))
                    return
                async with live.changed:  # sleep until the job writes a frame or changes state
                    await live.changed.wait_for(lambda: live.version != seen)
        except (ConnectionError, RuntimeError):
            return

    def _frame_attachments(self, job_id: str, index: int, path: Path) -> list[tuple[str, bytes]]:
        """The frame, then the engine's other outputs for it (e.g. "face_crops.png")."""
        extras = self.store.frame_extras(job_id, index)
        return [("frame.png", path.read_bytes())] + [(f"{name}.png", extra.read_bytes())
                                                      for name, extra in extras.items()]

    def _ending(self, job_id: str, state: str, live: LiveJob | None) -> dict:
        if state == "done":
            return {"type": "done", "job_id": job_id}
        if state == "cancelled":
            return {"type": "cancelled", "job_id": job_id}
        error = live.error if live is not None else self.store.status(job_id).get("error")
        return error_message("engine_failed", error or "the job failed", job_id=job_id)

    async def _notify(self, live: LiveJob) -> None:
        async with live.changed:
            live.version += 1
            live.changed.notify_all()

    async def _finish(self, live: LiveJob, state: str, error: str | None = None) -> None:
        live.state, live.error = state, error
        extra = {"error": error} if error else {}
        self.store.set_status(live.job_id, state, **extra)
        await self._notify(live)

    # --- the job worker (one device) ------------------------------------------------------

    async def _run_jobs(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job_id = await self.queue.get()
            live = self.jobs[job_id]
            if live.state in FINISHED:
                continue
            live.state = "running"
            self.store.set_status(job_id, "running")
            await self._notify(live)
            try:
                await asyncio.to_thread(self._render, job_id, live, loop)
            except (EngineError, ImageError, JobError) as error:
                await self._finish(live, "failed", str(error))
                continue
            except Exception as error:  # an engine bug fails the job, not the server
                log.exception("job %s failed", job_id)
                await self._finish(live, "failed", f"engine error: {error}")
                continue
            await self._finish(live, "cancelled" if live.stop.is_set() else "done")

    def _render(self, job_id: str, live: LiveJob, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run the engine from the first missing frame. Each frame is encoded and
        stored on a second thread, in order, while the engine works on the next one."""
        spec = self.store.spec(job_id)
        engine = self.engines.get(spec["engine"])
        start = self.store.first_missing_frame(job_id)
        if start >= live.total:
            return
        inputs = self.store.load_inputs(job_id, engine.info, self.limits.max_side, self.limits.max_pixels)

        def store_frame(index: int, image, extras: dict) -> None:
            self.store.write_frame(job_id, index, encode_png(image),
                                   {name: encode_png(extra) for name, extra in extras.items()})
            asyncio.run_coroutine_threadsafe(self._notify(live), loop)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="marionette-store") as writer:
            pending: deque[Future] = deque()
            try:
                for output in engine.render(inputs, start, live.stop):
                    index, image, extras = output if len(output) == 3 else (*output, {})
                    pending.append(writer.submit(store_frame, index, image, extras))
                    while len(pending) > 2 or (pending and pending[0].done()):
                        pending.popleft().result()
                    if live.stop.is_set():
                        return
            finally:
                for future in pending:
                    future.result()
