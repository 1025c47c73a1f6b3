"""Where the backend is and how to reach it: a connected client (starting a local backend first when
allowed), and a backend on this machine started as a subprocess with a log file, checked, stopped.
No bpy here: the caller passes the settings in (preferences.backend_settings)."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.client import BackendClient, BackendError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class BackendSettings:
    host: str
    port: int
    token_file: Path
    python: str

    def token(self) -> str:
        try:
            return self.token_file.read_text().strip()
        except OSError:
            raise BackendError("token", f"cannot read the token file {self.token_file}; start the backend once "
                                        f"(it creates the file) or copy the backend's token there") from None

    def client(self, timeout: float | None = 30.0) -> BackendClient:
        return BackendClient(self.host, self.port, self.token(), timeout=timeout)


_process: subprocess.Popen | None = None
_log_path: Path | None = None


def running_process() -> subprocess.Popen | None:
    return _process if _process is not None and _process.poll() is None else None


def log_path() -> Path | None:
    return _log_path


def start(settings: BackendSettings, log_folder: Path) -> subprocess.Popen:
    """Start `marionette serve` with the given Python; its output goes to a log file."""
    global _process, _log_path
    if running_process() is not None:
        return _process
    if settings.host not in LOOPBACK:
        raise BackendError("connect", f"the backend address {settings.host} is not this machine; start the "
                                      f"backend there (or use an SSH tunnel to 127.0.0.1)")
    if not settings.python or not Path(settings.python).is_file():
        raise BackendError("connect", "set Preferences > Add-ons > Marionette > Backend Python to the Python that "
                                      "has the marionette package (e.g. <checkout>/.venv/bin/python)")
    log_folder.mkdir(parents=True, exist_ok=True)
    _log_path = log_folder / "backend.log"
    with open(_log_path, "ab") as log:
        # -P and a neutral working folder: a folder named "marionette" where Blender runs (an output
        # folder, say) must not shadow the package.
        _process = subprocess.Popen(
            [settings.python, "-P", "-m", "marionette.cli", "serve", "--host", settings.host,
             "--port", str(settings.port), "--token-file", str(settings.token_file)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, cwd=log_folder)
    return _process


def healthy(settings: BackendSettings) -> bool:
    """True when a backend answers a ping with our token."""
    try:
        with settings.client(timeout=2.0) as client:
            client.ping()
        return True
    except BackendError:
        return False


def wait_until_healthy(settings: BackendSettings, timeout: float = 30.0) -> None:
    """Block until the backend answers (used in background mode); raises BackendError naming the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(settings):
            return
        if _process is not None and _process.poll() is not None:
            break
        time.sleep(0.2)
    raise BackendError("connect", f"the backend did not start; see its log {_log_path}")


def stop() -> bool:
    """Stop the backend this Blender started; False if there was none."""
    global _process
    process = running_process()
    _process = None
    if process is None:
        return False
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
    return True


def default_log_folder() -> Path:
    return Path(tempfile.gettempdir()) / "marionette"


def connect(settings: BackendSettings, auto_start: bool = False, log_folder: Path | None = None,
            timeout: float = 60.0) -> BackendClient:
    """A connected client; with auto_start, a missing local backend (or its token) starts one first.
    Blocking: call it from a worker thread when Blender has a window."""
    try:
        client = settings.client(timeout=timeout)
        client.connect()
        return client
    except BackendError as error:
        if error.code not in ("connect", "token") or not auto_start:
            raise
    start(settings, log_folder or default_log_folder())
    wait_until_healthy(settings)
    client = settings.client(timeout=timeout)
    client.connect()
    return client
