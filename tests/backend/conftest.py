import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from served import Server  # noqa: E402 (found through the line above)


class BackendProcess:
    """`marionette serve` in its own process on a free loopback port."""

    def __init__(self, store: Path, token_file: Path, extra=()):
        self.extra = extra
        self.store, self.token_file = store, token_file
        self.process = subprocess.Popen(
            [sys.executable, "-m", "marionette.cli", "serve", "--port", "0", "--store", str(store),
             "--token-file", str(token_file), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.process.stdout.readline()
        if not line.startswith("READY"):
            self.process.kill()
            raise RuntimeError("backend did not start: " + line + self.process.stderr.read())
        self.port = int(line.split()[1])
        self.token = token_file.read_text().strip()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stored_jobs(self) -> int:
        """How many jobs the server has stored."""
        return sum(1 for path in self.store.iterdir() if path.is_dir() and not path.name.startswith(".")) \
            if self.store.is_dir() else 0

    def peak_rss_kib(self) -> int:
        """The most resident memory the process has had so far (VmHWM)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0


@pytest.fixture
def backend(tmp_path):
    server = BackendProcess(tmp_path / "jobs", tmp_path / "config" / "token")
    yield server
    server.stop()


@pytest.fixture
def start_backend(tmp_path):
    started = []

    def start(extra=()):
        server = BackendProcess(tmp_path / "jobs", tmp_path / "config" / "token", extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_backend, monkeypatch):
    """A `marionette serve` process (served.Server). The backend runs toy models on one thread: on a shared
    2-core machine torch's spinning worker threads otherwise fight the tests' own, for no gain."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return Server(start_backend)


@pytest.fixture(scope="module")
def torch_one_thread():
    """For modules that run toy torch models (pytestmark = pytest.mark.usefixtures("torch_one_thread")):
    one thread each for the tests and the backend; on a shared 2-core machine torch's spinning worker
    threads otherwise fight each other and everything else, for no gain at this size."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
