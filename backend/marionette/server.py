"""`marionette serve`: the protocol over TCP (spec: docs/PROTOCOL.md).

One asyncio loop serves every connection; jobs run on a worker thread (job_runner.py). What a
connection may make the server hold, before the token is checked and after, is receiving.py's
business. Bad input is answered with an error message and, if the byte stream cannot be trusted any
more, the connection is closed; the server carries on.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from pathlib import Path

from marionette_core.protocol import PROTOCOL_VERSION, Message, ProtocolError, encode_message, error_message

from . import __version__
from .engines import EngineError, EngineRegistry
from .job_inputs import JobError, LimitError, check_images, check_track_name, prepare_inputs, validate_job
from .job_runner import JobRunner
from .jobs import JobStore, UnknownJobError
from .lip_sync.service import handle_lip_sync
from .receiving import Busy, Receiver, ServerLimits
from .fetching import releases_for
from .weights_service import WeightsService

log = logging.getLogger("marionette.server")

HANDSHAKE_TIMEOUT = 10.0


class Server:
    def __init__(self, store: JobStore, token: str, engines: EngineRegistry | None = None,
                 limits: ServerLimits | None = None, cluster=None):
        """`cluster`: a cluster.ClusterPool whose workers run the jobs; None: this machine does."""
        self.store = store
        self.token = token
        self.engines = engines or EngineRegistry()
        self.limits = limits or ServerLimits()
        self.cluster = cluster
        self.runner = JobRunner(store, self.engines, self.limits, cluster)
        self.receiver = Receiver(self.limits)
        self.weights = WeightsService(self.engines, store.root.parent)
        self.connections = 0
        self._decoding = asyncio.Semaphore(self.limits.decoding_jobs)
        self._server: asyncio.base_events.Server | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, host: str, port: int) -> int:
        self.runner.start()
        # A small reader buffer: what a connection holds beyond the message it is reading stays small.
        self._server = await asyncio.start_server(self._serve_connection, host, port, limit=64 * 1024)
        return self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.runner.close()
        if self._server:
            self._server.close()

    def capabilities(self) -> dict:
        # Each engine's weights releases (`marionette weights list`), so a client can offer them.
        capabilities = {"engines": [{**info.to_json(), "weights_releases": releases_for(info.name)}
                                    for info in self.engines.infos()],
                        "unavailable_engines": [engine.to_json() for engine in self.engines.unavailable.values()],
                        "limits": self.limits.to_json()}
        if self.cluster is not None:
            capabilities["cluster"] = self.cluster.status()
        return capabilities

    # --- connections -----------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        send_lock = asyncio.Lock()
        streams: dict[str, asyncio.Task] = {}

        async def send(header: dict, attachments=None) -> None:
            async with send_lock:
                writer.writelines(encode_message(header, attachments))
                await writer.drain()

        if self.connections >= self.limits.max_connections:
            await self._try_send(send, error_message("busy", f"the backend serves {self.connections} connections, "
                                                             f"its limit; close other clients or try again shortly"))
            writer.close()
            return
        self.connections += 1
        self.receiver.admit(writer)
        try:
            hello = await asyncio.wait_for(self.receiver.read_hello(reader), HANDSHAKE_TIMEOUT)
            if hello is None or not await self._handshake(hello, send):
                return
            self.receiver.forget(writer)
            decoder = self.receiver.decoder()
            while True:
                message, reserved = await self.receiver.read(reader, decoder)
                if message is None:
                    return
                try:
                    await self._handle(message, send, streams)
                finally:
                    self.receiver.budget.release(reserved)
                    del message  # its attachments go now, not when the next message arrives
        except ProtocolError as error:
            await self._try_send(send, error_message(error.code, str(error)))
        except Busy as error:
            await self._try_send(send, error_message("busy", str(error)))
        except asyncio.TimeoutError:
            await self._try_send(send, error_message("bad_request", "no hello within the handshake timeout, or "
                                                                    "a message stalled; the connection is closed"))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception as error:  # never let one connection take the server down
            log.exception("connection failed")
            await self._try_send(send, error_message("internal", f"server error: {error}"))
        finally:
            for task in streams.values():
                task.cancel()
            self.receiver.forget(writer)
            self.connections -= 1
            writer.close()

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

    # --- requests --------------------------------------------------------------------------

    async def _handle(self, message: Message, send, streams: dict[str, asyncio.Task]) -> None:
        kind, header = message.type, message.header
        try:
            if kind == "ping":
                await send({"type": "pong", "id": header.get("id"), "in_flight_bytes": self.receiver.budget.used,
                            "connections": self.connections})
            elif kind == "submit":
                job_id, width, height = await self._submit(message)
                live = self.runner.jobs[job_id]
                await send({"type": "accepted", "job_id": job_id, "total": live.total,
                            "queue_position": self.runner.queue.qsize(), "width": width, "height": height})
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
                await self.runner.cancel(job_id)
                await send({"type": "cancelling", "job_id": job_id})
            elif kind == "lip_sync":
                await handle_lip_sync(message, send, self.weights.default_folder("lip-sync"))
            elif kind == "weights":
                await self.weights.handle(header, send)
            elif kind == "jobs":
                await send({"type": "jobs", "jobs": [self._job_summary(j) for j in self.store.job_ids()]})
            else:
                await send(error_message("bad_request", f"unknown message type {kind[:40]!r}"))
        except UnknownJobError as error:
            await send(error_message("unknown_job", str(error)))
        except LimitError as error:
            await send(error_message("limit", str(error)))
        except JobError as error:
            await send(error_message("bad_request", str(error)))
        except EngineError as error:
            await send(error_message("unknown_engine", str(error)))

    def _job_summary(self, job_id: str) -> dict:
        spec, status = self.store.spec(job_id), self.store.status(job_id)
        return {"job_id": job_id, "engine": spec["engine"], "total": len(spec["frames"]), "state": status["state"],
                "done": self.store.first_missing_frame(job_id)}

    async def _submit(self, message: Message) -> tuple[str, int, int]:
        """Validate and store a submitted job; its id and output size. Images are checked from their
        headers before anything is decoded, and only `decoding_jobs` submits decode at once."""
        job = message.header.get("job")
        if not isinstance(job, dict):
            raise JobError("'submit' needs a 'job' object")
        name = job.get("engine")
        if not isinstance(name, str):
            raise JobError("the job needs an 'engine' name")
        engine = self.engines.get(name)
        try:
            reference = message.attachment("reference.png")
        except KeyError:
            raise JobError("the job needs a 'reference.png' attachment") from None
        tracks, audio = self._split_attachments(message)
        # Every image's header first: a hostile image is refused before anything else looks at it.
        reference_size = await asyncio.to_thread(check_images, reference, tracks, self.limits)
        spec = validate_job(job, engine.info, tracks, audio, reference_size, self.limits)
        if engine.info.needs_weights and not spec["settings"].get("weights") and self.cluster is None:
            # No folder given: the one `weights` fetches into by default (on a cluster each worker's own).
            spec["settings"]["weights"] = str(self.weights.default_folder(name))
        poses = job["poses"]
        async with self._decoding:
            # On a cluster the engine's own check (its weights folder, its device) runs on the worker
            # that has them, at the job's start; here only what the job itself says is checked.
            await asyncio.to_thread(prepare_inputs, spec, engine, reference, job["reference_pose"], poses, tracks,
                                    audio, self.limits, engine_check=self.cluster is None)
        job_id = await asyncio.to_thread(self.store.create, spec, reference, job["reference_pose"], poses, tracks,
                                         audio)
        self.runner.enqueue(job_id, len(poses))
        return job_id, spec["width"], spec["height"]

    @staticmethod
    def _split_attachments(message: Message) -> tuple[dict[str, list[bytes]], bytes | None]:
        """The image tracks (attachments `track/<name>/<index:06d>.png`, in order) and the sound
        (`audio`)."""
        tracks: dict[str, list[bytes]] = {}
        audio = None
        for meta, data in zip(message.header.get("attachments", []), message.attachments):
            name = meta["name"]
            if name == "reference.png":
                continue
            if name == "audio":
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
        return tracks, audio

    def _stream(self, job_id: str, start: int, send, streams: dict[str, asyncio.Task]) -> None:
        previous = streams.pop(job_id, None)
        if previous is not None:
            previous.cancel()
        streams[job_id] = asyncio.create_task(self.runner.stream_frames(job_id, start, send))


async def serve(store_path: Path, token: str, host: str, port: int, ready=None,
                limits: ServerLimits | None = None, cluster=None) -> None:
    """Run a server until cancelled. `ready(port)` is called once it listens."""
    server = Server(JobStore(store_path), token, limits=limits, cluster=cluster)
    bound = await server.start(host, port)
    if ready is not None:
        ready(bound)
    try:
        await asyncio.Event().wait()
    finally:
        await server.close()
        if cluster is not None:
            cluster.close()
