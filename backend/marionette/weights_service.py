"""The server's `weights` request: the state of an engine's weights folder on the backend's machine,
and fetching it there (fetching.py), one fetch at a time, beside the jobs, with progress and cancel.

    {"type": "weights", "engine": E, "release": R?, "folder": F?}      -> the folder's state
    {"type": "weights", "engine": E, "folder": F?, "action": "fetch", "accept_licences": bool}
        -> {"type": "weights", "state": "fetching"}, then "weights_progress" messages
           {"done", "total", "file"}, then the folder's state (or state "failed" / "cancelled")
    {"type": "weights", "engine": E, "action": "cancel"}

The folder's state: {"type": "weights", "engine", "folder", "state": "ready" | "missing" | "fetching",
"status" (the engine's own check, or what is missing), "listed" (whether Marionette knows where
the engine's files come from), "size" (their listed bytes), "licences" (repository -> licence, for
those that need accepting)}. Without a folder the engine's default is used: <backend data>/weights/E.
`release` (default: E) picks one of the engine's releases (`wan-animate-2-distilled` for
`wan-animate-2`); E may also be `lip-sync`, whose folder no engine reads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

from marionette_core.protocol import error_message

from .engines import EngineError, EngineRegistry
from .fetching import FetchCancelled, fetch, licences_to_accept, manifests, release_engine

log = logging.getLogger("marionette.weights")

PROGRESS_INTERVAL_S = 0.25  # at most this often a progress message


def weights_status(engine, folder: Path) -> dict:
    """{"ok", "status"}: the engine's own check of a weights folder."""
    if not engine.info.needs_weights:
        return {"ok": True, "status": "needs no weights"}
    try:
        note = engine.check_weights(str(folder))
    except EngineError as error:
        return {"ok": False, "status": str(error)}
    return {"ok": True, "status": "checks out" + (f" ({note})" if note else "")}


def release_status(name: str, folder: Path, engines: EngineRegistry) -> dict:
    """{"ok", "status"}: whether `folder` checks out for a release: its engine's own check, or lip sync's."""
    engine_name = release_engine(name)
    if engine_name is None:
        from .lip_sync.weights import check_weights_folder
        try:
            check_weights_folder(folder)
        except EngineError as error:
            return {"ok": False, "status": str(error)}
        return {"ok": True, "status": "checks out"}
    return weights_status(engines.get(engine_name), folder)


class WeightsService:
    def __init__(self, engines: EngineRegistry, data_folder: Path):
        self.engines = engines
        self.default_root = Path(data_folder) / "weights"
        self.fetching: tuple[str, Path, threading.Event] | None = None

    def folder_for(self, engine: str, header: dict) -> Path:
        given = header.get("folder")
        if given is not None and not isinstance(given, str):
            raise EngineError("'folder' must be a path on the backend's machine")
        return Path(given).expanduser() if given else self.default_folder(engine)

    def default_folder(self, name: str) -> Path:
        """Where an engine's (or lip sync's) weights go when no folder is given: <data folder>/weights/<name>."""
        return self.default_root / name

    def state(self, engine_name: str, folder: Path, release: str | None = None) -> dict:
        release = release or engine_name
        files = manifests().get(release, [])
        answer = {"type": "weights", "engine": engine_name, "release": release, "folder": str(folder),
                  "listed": bool(files), "size": sum(file.listed_size for file in files),
                  "licences": licences_to_accept(files)}
        if self.fetching is not None and self.fetching[:2] == (engine_name, folder):
            return {**answer, "state": "fetching", "status": "fetching"}
        status = release_status(release, folder, self.engines) if files else \
            weights_status(self.engines.get(engine_name), folder)
        return {**answer, "state": "ready" if status["ok"] else "missing", "status": status["status"]}

    def release_for(self, engine_name: str, header: dict) -> str:
        """The release a request means: its `release`, else the engine's own; EngineError if unknown or another
        engine's."""
        release = header.get("release") or engine_name
        if not isinstance(release, str) or (release != engine_name and release not in manifests()):
            raise EngineError(f"no release {str(release)[:40]!r}; `marionette weights list` names them")
        if release in manifests() and release_engine(release) != (None if engine_name == "lip-sync" else engine_name):
            raise EngineError(f"{release} is not a release of {engine_name}")
        return release

    async def handle(self, header: dict, send) -> None:
        engine_name = header.get("engine")
        if not isinstance(engine_name, str):
            raise EngineError("the 'weights' request needs an 'engine' name (or lip-sync)")
        if engine_name != "lip-sync":
            self.engines.get(engine_name)  # unknown or unavailable: named
        release = self.release_for(engine_name, header)
        folder = self.folder_for(engine_name, header)
        action = header.get("action", "status")
        if action == "status":
            await send(await asyncio.to_thread(self.state, engine_name, folder, release))
        elif action == "cancel":
            if self.fetching is not None and self.fetching[0] == engine_name:
                self.fetching[2].set()
            await send({"type": "weights", "engine": engine_name, "state": "cancelling"})
        elif action == "fetch":
            if self.fetching is not None:
                await send(error_message("busy", f"the backend is fetching the {self.fetching[0]} weights; one fetch "
                                                 "at a time"))
                return
            stop = threading.Event()
            self.fetching = (engine_name, folder, stop)
            await send({"type": "weights", "engine": engine_name, "release": release, "folder": str(folder),
                        "state": "fetching"})
            asyncio.create_task(self._fetch(engine_name, release, folder, bool(header.get("accept_licences")), stop,
                                            send))
        else:
            raise EngineError(f"unknown weights action {str(action)[:40]!r}; status, fetch or cancel")

    async def _fetch(self, engine_name: str, release: str, folder: Path, accept: bool, stop: threading.Event,
                     send) -> None:
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(done: int, total: int, file: str) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or done >= total:
                last[0] = now
                message = {"type": "weights_progress", "engine": engine_name, "done": done, "total": total,
                           "file": file}
                asyncio.run_coroutine_threadsafe(_try_send(send, message), loop)

        try:
            await asyncio.to_thread(fetch, release, folder, accept_licences=accept, say=log.info,
                                    progress=progress, stop=stop, interactive=False)
            ending = None
        except FetchCancelled:
            ending = {"state": "cancelled", "status": "the fetch was cancelled; what arrived whole stays"}
        except EngineError as error:
            ending = {"state": "failed", "status": str(error)}
        except Exception as error:  # a bug must not take the server down
            log.exception("fetching the %s weights failed", engine_name)
            ending = {"state": "failed", "status": f"{type(error).__name__}: {error}"}
        finally:
            self.fetching = None
        answer = await asyncio.to_thread(self.state, engine_name, folder, release)
        await _try_send(send, {**answer, **(ending or {})})


async def _try_send(send, message: dict) -> None:
    try:
        await send(message)
    except (ConnectionError, RuntimeError):  # the client left; the fetch goes on for the next one to see
        pass
