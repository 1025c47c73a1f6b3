"""`marionette serve`: protocol 2 over TCP (spec: docs/PROTOCOL.md).

One asyncio loop serves every connection. Jobs run one at a time per device on a worker thread;
their frames go to the job store as they are made, and each connection streams a job's frames from
the store in order, at its own pace: a slow client holds back nobody, and one that drops and
re-attaches gets exactly the frames it missed. Bad input is answered with an error message and, if
the byte stream cannot be trusted any more, the connection is closed; the server carries on.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from marionette_core.image_header import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE
from marionette_core.protocol import (PROTOCOL_VERSION, Message, MessageDecoder, ProtocolError, encode_message,
                                      error_message)

from . import __version__
from .audio import AudioError
from .lip_sync import handle_lip_sync
from .engines import EngineError, EngineRegistry
from .images import ImageError, ImageLimitError, check_image, decode_image, encode_png
from .jobs import FINISHED, JobError, JobStore, UnknownJobError, build_inputs, check_track_name, check_tracks

log = logging.getLogger("marionette.server")

HANDSHAKE_TIMEOUT = 10.0
READ_CHUNK = 1 << 20


@dataclass
class Limits:
    max_json: int = 4 * 1024 * 1024
    max_payload: int = 256 * 1024 * 1024
    max_frames: int = 10_000
    max_side: int = DEFAULT_MAX_SIDE  # pixels, for the output and for every image sent
    max_pixels: int = DEFAULT_MAX_PIXELS  # width x height, likewise
    decoding_jobs: int = 2  # submits whose images are decoded at once; the others wait their turn

    def to_json(self) -> dict:
        return {"max_json_bytes": self.max_json, "max_payload_bytes": self.max_payload,
                "max_frames": self.max_frames, "max_side": self.max_side, "max_pixels": self.max_pixels}


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


class Server:
    def __init__(self, store: JobStore, token: str, engines: EngineRegistry | None = None,
                 limits: Limits | None = None):
        self.store = store
        self.token = token
        self.engines = engines or EngineRegistry()
        self.limits = limits or Limits()
        self.jobs: dict[str, LiveJob] = {}
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.connections = 0
        self._decoding = asyncio.Semaphore(self.limits.decoding_jobs)
        self._server: asyncio.base_events.Server | None = None
        self._worker: asyncio.Task | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        for job_id in self.store.unfinished():  # a restarted backend takes its jobs up again
            spec = self.store.spec(job_id)
            self.store.set_status(job_id, "queued")
            self.jobs[job_id] = LiveJob(job_id, len(spec["frames"]), "queued")
            self.queue.put_nowait(job_id)
            log.info("resuming job %s from frame %d", job_id, self.store.first_missing_frame(job_id))
        self._worker = asyncio.create_task(self._run_jobs())
        self._server = await asyncio.start_server(self._serve_connection, host, port, limit=READ_CHUNK)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for job in self.jobs.values():
            job.stop.set()
        if self._server:
            self._server.close()
        if self._worker:
            self._worker.cancel()

    def capabilities(self) -> dict:
        return {"engines": [info.to_json() for info in self.engines.infos()], "limits": self.limits.to_json()}

    # --- connections -----------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = MessageDecoder(self.limits.max_json, self.limits.max_payload)
        send_lock = asyncio.Lock()
        streams: dict[str, asyncio.Task] = {}

        async def send(header: dict, attachments=None) -> None:
            async with send_lock:
                writer.writelines(encode_message(header, attachments))
                await writer.drain()

        try:
            hello = await asyncio.wait_for(self._read(reader, decoder), HANDSHAKE_TIMEOUT)
            if hello is None or not await self._handshake(hello, send):
                return
            while True:
                message = await self._read(reader, decoder)
                if message is None:
                    return
                await self._handle(message, send, streams)
        except ProtocolError as error:
            await self._try_send(send, error_message(error.code, str(error)))
        except asyncio.TimeoutError:
            await self._try_send(send, error_message("bad_request", "no hello within the handshake timeout"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as error:  # never let one connection take the server down
            log.exception("connection failed")
            await self._try_send(send, error_message("internal", f"server error: {error}"))
        finally:
            for task in streams.values():
                task.cancel()
            self.connections -= 1
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, decoder: MessageDecoder) -> Message | None:
        while True:
            message = decoder.next_message()
            if message is not None:
                return message
            chunk = await reader.read(min(READ_CHUNK, max(decoder.needed(), 1 << 16)))
            if not chunk:
                return None
            decoder.feed(chunk)

    @staticmethod
    async def _try_send(send, header: dict) -> None:
        try:
            await send(header)
        except (ConnectionError, RuntimeError):
            pass

    async def _handshake(self, hello: Message, send) -> bool:
        header = hello.header
        if hello.type != "hello":
            await send(error_message("bad_request", "the first message must be 'hello'"))
            return False
        if header.get("version") != PROTOCOL_VERSION:
            await send(error_message("version", f"this backend speaks protocol {PROTOCOL_VERSION} and the client "
                                                f"{header.get('version')!r}: install the Marionette extension and "
                                                f"backend of the same release"))
            return False
        token = header.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
            await send(error_message("unauthorized", "wrong or missing token; copy the backend's token file "
                                                     "into the client's settings"))
            return False
        await send({"type": "welcome", "version": PROTOCOL_VERSION, "server": f"marionette {__version__}",
                    "capabilities": self.capabilities()})
        return True

    async def _handle(self, message: Message, send, streams: dict[str, asyncio.Task]) -> None:
        kind, header = message.type, message.header
        try:
            if kind == "ping":
                await send({"type": "pong", "id": header.get("id")})
            elif kind == "submit":
                job_id, width, height = await self._submit(message)
                live = self.jobs[job_id]
                await send({"type": "accepted", "job_id": job_id, "total": live.total,
                            "queue_position": self.queue.qsize(), "width": width, "height": height})
                self._stream(job_id, 0, send, streams)
            elif kind == "attach":
                job_id = header.get("job_id")
                self.store.require(job_id)
                start = header.get("from_index", 0)
                if type(start) is not int or start < 0:
                    raise JobError("'from_index' must be a non-negative integer")
                spec = self.store.spec(job_id)
                status = self.store.status(job_id)
                await send({"type": "attached", "job_id": job_id, "total": len(spec["frames"]),
                            "state": status["state"], "frames": spec["frames"], "width": spec.get("width"),
                            "height": spec.get("height")})
                self._stream(job_id, start, send, streams)
            elif kind == "cancel":
                job_id = header.get("job_id")
                self.store.require(job_id)
                live = self.jobs.get(job_id)
                if live is not None and live.state not in FINISHED:
                    live.stop.set()
                    if live.state == "queued":
                        await self._finish(live, "cancelled")
                await send({"type": "cancelling", "job_id": job_id})
            elif kind == "lip_sync":
                await handle_lip_sync(message, send)
            elif kind == "jobs":
                await send({"type": "jobs", "jobs": [self._job_summary(j) for j in self.store.job_ids()]})
            else:
                await send(error_message("bad_request", f"unknown message type {kind[:40]!r}"))
        except UnknownJobError as error:
            await send(error_message("unknown_job", str(error)))
        except JobError as error:
            await send(error_message("bad_request", str(error)))
        except _LimitError as error:
            await send(error_message("limit", str(error)))
        except EngineError as error:
            await send(error_message("unknown_engine", str(error)))

    def _job_summary(self, job_id: str) -> dict:
        spec, status = self.store.spec(job_id), self.store.status(job_id)
        return {"job_id": job_id, "engine": spec["engine"], "total": len(spec["frames"]), "state": status["state"],
                "done": self.store.first_missing_frame(job_id)}

    async def _submit(self, message: Message) -> tuple[str, int, int]:
        """Validate and store a submitted job; its id and output size. Images are checked from their
        headers before anything is decoded, and only `decoding_jobs` submits decode at once."""
        header = message.header
        job = header.get("job")
        if not isinstance(job, dict):
            raise JobError("'submit' needs a 'job' object")
        engine = job.get("engine")
        if not isinstance(engine, str):
            raise JobError("the job needs an 'engine' name")
        info = self.engines.get(engine).info
        poses = job.get("poses")
        frames = job.get("frames")
        if not isinstance(poses, list) or not poses:
            raise JobError("the job needs 'poses': one OpenPose JSON object per frame")
        if len(poses) > self.limits.max_frames:
            raise _LimitError(f"{len(poses)} frames is over the limit of {self.limits.max_frames}")
        if frames is None:
            frames = list(range(len(poses)))
        if not isinstance(frames, list) or len(frames) != len(poses) or not all(type(f) is int for f in frames):
            raise JobError("'frames' must list one integer frame number per pose")
        width, height = job.get("width"), job.get("height")
        for side in (width, height):
            if side is not None and (type(side) is not int or side <= 0):
                raise JobError("'width' and 'height' must be positive integers")
            if side is not None and side > self.limits.max_side:
                raise _LimitError(f"a side of {side} px is over the limit of {self.limits.max_side}")
        settings = job.get("settings", {})
        if not isinstance(settings, dict):
            raise JobError("'settings' must be an object")
        try:
            settings = info.validate_settings(settings)
        except EngineError as error:
            raise JobError(str(error)) from None
        text = job.get("text", {})
        if not isinstance(text, dict) or not all(isinstance(v, str) for v in text.values()):
            raise JobError("'text' must be an object of strings (prompt, negative_prompt)")
        declared_text = {spec.name for spec in info.inputs if spec.kind == "text"}
        if set(text) - declared_text:
            raise JobError(f"engine '{engine}' takes no text {', '.join(sorted(set(text) - declared_text))}")
        fps = job.get("fps", 24.0)
        if not isinstance(fps, (int, float)) or isinstance(fps, bool) or not 0 < fps <= 1000:
            raise JobError("'fps' must be a number of frames per second")
        if not isinstance(job.get("reference_pose"), dict):
            raise JobError("the job needs 'reference_pose': OpenPose JSON of the rig posed over the reference")
        try:
            reference = message.attachment("reference.png")
        except KeyError:
            raise JobError("the job needs a 'reference.png' attachment") from None
        tracks, audio = self._split_attachments(message, info)
        # Every image's header first: a hostile image is refused before anything else looks at it.
        reference_width, reference_height = await asyncio.to_thread(self._check_images, reference, tracks)
        check_tracks(info, tracks, len(poses))
        spec = {"engine": engine, "settings": settings, "width": width or reference_width,
                "height": height or reference_height, "frames": frames, "text": text, "fps": float(fps)}
        if info.size_multiple > 1 and (spec["width"] % info.size_multiple or spec["height"] % info.size_multiple):
            raise _LimitError(f"engine '{engine}' needs width and height in multiples of {info.size_multiple}, "
                              f"not {spec['width']}x{spec['height']}")
        if spec["width"] * spec["height"] > self.limits.max_pixels:
            raise _LimitError(f"an output of {spec['width']}x{spec['height']} pixels is over the limit of "
                              f"{self.limits.max_pixels} pixels")
        async with self._decoding:
            await asyncio.to_thread(self._validate, spec, reference, job["reference_pose"], poses, tracks, audio)
        job_id = await asyncio.to_thread(self.store.create, spec, reference, job["reference_pose"], poses, tracks,
                                         audio)
        self.jobs[job_id] = LiveJob(job_id, len(poses), "queued")
        self.queue.put_nowait(job_id)
        return job_id, spec["width"], spec["height"]

    @staticmethod
    def _split_attachments(message: Message, info) -> tuple[dict[str, list[bytes]], bytes | None]:
        """The image tracks (attachments `track/<name>/<index:06d>.png`, in order) and the sound
        (`audio`), checked against what the engine declares."""
        tracks: dict[str, list[bytes]] = {}
        audio = None
        for meta, data in zip(message.header.get("attachments", []), message.attachments):
            name = meta["name"]
            if name == "reference.png":
                continue
            if name == "audio":
                if not any(spec.kind == "audio" for spec in info.inputs):
                    raise JobError(f"engine '{info.name}' takes no audio")
                audio = data
                continue
            parts = name.split("/")
            if len(parts) != 3 or parts[0] != "track":
                raise JobError(f"unknown attachment {name[:80]!r}: send reference.png, track/<name>/<index>.png "
                               f"and audio")
            images = tracks.setdefault(check_track_name(parts[1]), [])
            if parts[2] != f"{len(images):06d}.png":
                raise JobError(f"attachment {name[:80]!r} is out of order: the '{parts[1]}' images must come as "
                               f"{len(images):06d}.png, {len(images) + 1:06d}.png, ...")
            images.append(data)
        if any(spec.kind == "audio" and spec.required for spec in info.inputs) and audio is None:
            raise JobError(f"engine '{info.name}' needs the sound of the frame range as an 'audio' attachment")
        return tracks, audio

    def _check_images(self, reference: bytes, tracks: dict[str, list[bytes]]) -> tuple[int, int]:
        """Check every image from its header (PNG or JPEG, within the limits) before anything is
        decoded; returns the reference image's size."""
        try:
            size = check_image(reference, "reference image", self.limits.max_side, self.limits.max_pixels)
            for name, images in tracks.items():
                for index, data in enumerate(images):
                    check_image(data, f"'{name}' image {index}", self.limits.max_side, self.limits.max_pixels)
        except ImageLimitError as error:
            raise _LimitError(str(error)) from None
        except ImageError as error:
            raise JobError(str(error)) from None
        return size.width, size.height

    def _validate(self, spec, reference, reference_pose, poses, tracks, audio) -> None:
        """Decode the reference, every pose, the first image of each track and the sound, so a queued
        job has readable inputs; then let the engine refuse what it cannot run (its `check`: weights
        files, the tracks its mode needs), before anything is stored."""
        limits = self.limits.max_side, self.limits.max_pixels
        engine = self.engines.get(spec["engine"])
        try:
            inputs = build_inputs(reference, reference_pose, poses, tracks, spec["width"], spec["height"],
                                  spec["settings"], info=engine.info, text=spec["text"], audio=audio,
                                  fps=spec["fps"], max_side=limits[0], max_pixels=limits[1])
            for name, images in tracks.items():
                decode_image(images[0], f"'{name}' image 0", *limits)
            check = getattr(engine, "check", None)  # optional: engines that can tell early
            if check is not None:
                check(inputs)
        except ImageLimitError as error:
            raise _LimitError(str(error)) from None
        except (ImageError, JobError, AudioError, EngineError) as error:
            raise JobError(str(error)) from None

    # --- streaming ---------------------------------------------------------------------------

    def _stream(self, job_id: str, start: int, send, streams: dict[str, asyncio.Task]) -> None:
        previous = streams.pop(job_id, None)
        if previous is not None:
            previous.cancel()
        streams[job_id] = asyncio.create_task(self._stream_frames(job_id, start, send))

    async def _stream_frames(self, job_id: str, index: int, send) -> None:
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


class _LimitError(Exception):
    pass


async def serve(store_path: Path, token: str, host: str, port: int, ready=None) -> None:
    """Run a server until cancelled. `ready(port)` is called once it listens."""
    server = Server(JobStore(store_path), token)
    bound = await server.start(host, port)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
