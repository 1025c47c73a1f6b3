"""Jobs while the server runs: the queue, what runs them (here one at a time, on this machine's
device; with a cluster, side by side on its workers: cluster.py), and the streams that send a job's
frames to every client following it.

Frames go to the job store as the engine makes them; each stream sends a job's frames from the
store in order, at its client's pace: a slow client holds back nobody, and one that drops and
re-attaches gets exactly the frames it missed.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
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
    runs: list = field(default_factory=list)  # on a cluster: each worker the job ran on, and when


class JobRunner:
    def __init__(self, store: JobStore, engines: EngineRegistry, limits: Limits, cluster=None):
        """`cluster`: a cluster.ClusterPool to run jobs on, side by side; None: here, one at a time."""
        self.store, self.engines, self.limits, self.cluster = store, engines, limits, cluster
        self.jobs: dict[str, LiveJob] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        # Cluster jobs wait for a worker on threads of their own, not on the loop's default pool.
        self._threads = ThreadPoolExecutor(max_workers=64, thread_name_prefix="marionette-job") \
            if cluster is not None else None

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
            if self.cluster is not None:
                self.cluster.stop(job.job_id)
        if self._worker:
            self._worker.cancel()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, job_id: str, total: int) -> LiveJob:
        live = self.jobs[job_id] = LiveJob(job_id, total, "queued")
        self.queue.put_nowait(job_id)
        return live

    async def cancel(self, job_id: str) -> None:
        live = self.jobs.get(job_id)
        if live is not None and live.state not in FINISHED:
            live.stop.set()
            if self.cluster is not None:
                await asyncio.to_thread(self.cluster.stop, job_id)
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
        if live.runs:
            extra["runs"] = live.runs
        self.store.set_status(live.job_id, state, **extra)
        await self._notify(live)

    # --- running jobs ----------------------------------------------------------------------

    async def _run_jobs(self) -> None:
        while True:
            job_id = await self.queue.get()
            live = self.jobs[job_id]
            if live.state in FINISHED:
                continue
            if self.cluster is None:
                await self._run_job(job_id, live)  # one device: one job at a time
            else:  # side by side: the cluster has as many workers as it has room for
                task = asyncio.create_task(self._run_job(job_id, live))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_job(self, job_id: str, live: LiveJob) -> None:
        loop = asyncio.get_running_loop()
        live.state = "running"
        self.store.set_status(job_id, "running")
        await self._notify(live)
        try:
            await loop.run_in_executor(self._threads, self._render, job_id, live, loop)
        except (EngineError, ImageError, JobError) as error:
            await self._finish(live, "failed", str(error))
            return
        except Exception as error:  # an engine bug (or a cluster's failure) fails the job, not the server
            log.exception("job %s failed", job_id)
            await self._finish(live, "failed", f"{'cluster' if self.cluster else 'engine'} error: {error}")
            return
        await self._finish(live, "cancelled" if live.stop.is_set() else "done")

    def _render(self, job_id: str, live: LiveJob, loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run the engine from the first missing frame, here or on the cluster."""
        spec = self.store.spec(job_id)
        engine = self.engines.get(spec["engine"])
        start = self.store.first_missing_frame(job_id)
        if start >= live.total:
            return
        inputs = self.store.load_inputs(job_id, engine.info, self.limits.max_side, self.limits.max_pixels)
        if self.cluster is None:
            self._store_frames(job_id, live, loop, engine.render(inputs, start, live.stop), encoded=False)
            return
        from .cluster import ClusterError, engine_name, job_frames, run_needs

        def on_worker(worker: dict) -> None:  # the status says where the job runs (and ran)
            if live.runs:
                live.runs[-1]["ended"] = time.time()
            live.runs.append({"node": worker["node"], "host": worker["host"], "started": time.time()})
            self.store.set_status(job_id, "running", runs=live.runs)

        frames = job_frames(self.cluster, engine_name(engine), run_needs(engine.info, spec["settings"]), job_id, inputs,
                            start, live.total, live.stop, on_worker)
        try:
            self._store_frames(job_id, live, loop, frames, encoded=True)
        except ClusterError as error:
            raise JobError(str(error)) from None
        finally:
            if live.runs:
                live.runs[-1]["ended"] = time.time()

    def _store_frames(self, job_id: str, live: LiveJob, loop: asyncio.AbstractEventLoop, outputs,
                      encoded: bool) -> None:
        """Store each (index, image, extras) the engine yields, on a second thread, in order, while
        the engine works on the next one; images as arrays (encoded here) or PNG bytes."""
        def store_frame(index: int, image, extras: dict) -> None:
            if not encoded:
                image, extras = encode_png(image), {name: encode_png(extra) for name, extra in extras.items()}
            self.store.write_frame(job_id, index, image, extras)
            asyncio.run_coroutine_threadsafe(self._notify(live), loop)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="marionette-store") as writer:
            pending: deque[Future] = deque()
            try:
                for output in outputs:
                    index, image, extras = output if len(output) == 3 else (*output, {})
                    pending.append(writer.submit(store_frame, index, image, extras))
                    while len(pending) > 2 or (pending and pending[0].done()):
                        pending.popleft().result()
                    if live.stop.is_set():
                        break
                if encoded:  # a cluster worker: let it see the stop and end its run before it takes another
                    for _ in outputs:
                        pass
            finally:
                for future in pending:
                    future.result()
