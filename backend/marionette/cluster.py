"""Jobs on a Ray cluster: `marionette serve --cluster ADDRESS` and `marionette render --cluster ADDRESS`.

Ray is the engine here; this module only says what to ask of it. Imported only with `--cluster`
(a backend without it never imports Ray).

- Workers: one Ray actor per engine and slot (a GPU, or a CPU for CPU runs), holding that engine
  and so its loaded models between jobs. A job goes to an idle worker of its engine if there is one,
  else to a new worker where the cluster has room; an idle worker of another engine is retired to
  make room when nothing else is free.
- Frames: the worker runs the engine and yields each frame as PNG bytes through a Ray streaming
  generator, in the order the engine makes them; the server stores them as it does for a local run.
- Cancel: the server tells the worker, whose engine sees its stop event.
- Faults: a worker or node that dies mid-job raises WorkerLost here; the server takes the job up on
  another worker from its first missing frame.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import ray
import ray.exceptions

from .engines import EngineError
from .images import encode_png

log = logging.getLogger("marionette.cluster")

NAMESPACE = "marionette"
CONNECT_TIMEOUT_S = 20
MAX_TRIES = 3  # a job whose worker dies is taken up on another worker, this many times in all
# Frames of up to 8 MiB (a 1024x1536 RGB PNG is 2-5 MiB) travel inside the worker's reply instead of
# through Ray's object store: about 1 ms a 512x768 frame instead of 6 (docs/BENCHMARKS.md).
WORKER_ENV = {"env_vars": {"RAY_max_direct_call_object_size": str(8 * 2 ** 20)}}
# Errors that mean the worker (its process or its node) is gone, not that the job is wrong.
LOST = (ray.exceptions.RayActorError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError,
        ray.exceptions.OwnerDiedError, ray.exceptions.WorkerCrashedError, ray.exceptions.LocalRayletDiedError)


class ClusterError(Exception):
    """The cluster cannot be used (no answer at the address, no room that could ever fit a job)."""


class WorkerLost(Exception):
    """The worker running a job died (its process or its node); the job can go on elsewhere."""


class Cancelled(Exception):
    """The job was cancelled while it waited for a worker."""


@dataclass(frozen=True)
class Needs:
    """What one run of an engine holds on the cluster: a GPU (of at least gpu_memory_gib, which
    Ray does not schedule by: a worker on a smaller GPU is reported in the log), or a CPU."""
    gpus: int = 0
    cpus: int = 1
    gpu_memory_gib: float = 0.0

    def options(self) -> dict:
        return {"num_gpus": self.gpus, "num_cpus": self.cpus, "runtime_env": WORKER_ENV}

    def describe(self) -> str:
        if self.gpus:
            return f"{self.gpus} GPU" + (f" of {self.gpu_memory_gib:g} GiB" if self.gpu_memory_gib else "")
        return f"{self.cpus} CPU"


def run_needs(engine_info, settings: dict) -> Needs:
    """What the engine declares a run holds: its GPU, unless the job's `device` setting is "cpu";
    one CPU for a CPU engine or a CPU run."""
    if engine_info.gpus and settings.get("device") != "cpu":
        return Needs(gpus=engine_info.gpus, cpus=0, gpu_memory_gib=engine_info.gpu_memory_gib)
    return Needs(gpus=0, cpus=1)


@ray.remote(max_concurrency=4)
class EngineWorker:
    """One engine on one cluster slot. Threaded: `stop` and `where` answer while `render` runs."""

    def __init__(self, engine_name: str, package: str):
        from .engines import EngineRegistry, discover

        self.engine = EngineRegistry(*discover([package])).get(engine_name)  # its own package only
        self.stops: dict[str, threading.Event] = {}

    def where(self) -> dict:
        gpu = None
        if ray.get_gpu_ids():  # only a GPU worker pays for importing torch (its engine needs it anyway)
            import torch

            props = torch.cuda.get_device_properties(0)
            gpu = {"name": props.name, "memory_gib": round(props.total_memory / 2 ** 30, 1)}
        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "gpu": gpu}

    def render(self, job_id: str, inputs, start: int):
        """Yield (index, frame PNG, {name: PNG}) as the engine makes them. Each frame is encoded on a
        second thread while the engine makes the next one, as the one-machine backend does."""
        def encode(output) -> tuple:
            index, image, extras = output if len(output) == 3 else (*output, {})
            return index, encode_png(image), {name: encode_png(extra) for name, extra in extras.items()}

        stop = self.stops[job_id] = threading.Event()
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="marionette-encode") as encoder:
                pending: deque[Future] = deque()
                for output in self.engine.render(inputs, start, stop):
                    pending.append(encoder.submit(encode, output))
                    while len(pending) > 1 or pending[0].done():
                        yield pending.popleft().result()
                        if not pending:
                            break
                    if stop.is_set():
                        break
                while pending:
                    yield pending.popleft().result()
        finally:
            self.stops.pop(job_id, None)

    def stop(self, job_id: str) -> None:
        event = self.stops.get(job_id)
        if event is not None:
            event.set()


@dataclass
class Worker:
    engine: str
    needs: Needs
    actor: object
    busy: bool = True
    where: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"engine": self.engine, "busy": self.busy, "node": self.where.get("node", ""),
                "host": self.where.get("host"), "gpu": self.where.get("gpu"), "holds": self.needs.describe()}


def connect(address: str) -> str:
    """Join the cluster at `address` ("auto", "ray://host:port", "host:port", or "local": a cluster
    of this machine, started here). ClusterError naming the address when it does not answer."""
    if ray.is_initialized():
        return address
    kwargs = dict(namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False,
                  configure_logging=False, include_dashboard=False)
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            _check_reachable(address)
            ray.init(address=address, **kwargs)
    except ClusterError:
        raise
    except Exception as error:  # Ray's own errors are many kinds; say which address and why
        raise ClusterError(f"cannot join the Ray cluster at {address}: {error}") from None
    if threading.current_thread() is threading.main_thread():
        # Ray's driver turns SIGTERM into SystemExit wherever the process happens to be; the backend
        # ends on SIGTERM as it does without a cluster (its workers end with it: it owns them).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return address


def _check_reachable(address: str) -> None:
    """A host:port that takes no TCP connection is refused at once, instead of Ray's long retries."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except ValueError:
        raise ClusterError(f"the cluster address {address!r} is not host:port, ray://host:port, auto or local") \
            from None
    except OSError as error:
        raise ClusterError(f"no Ray cluster answers at {address}: {error.strerror or error}; start one with "
                           f"`ray start --head` there, or check the address and firewall") from None


ENGINE_PACKAGES: dict[str, str] = {}  # engine name -> the package a worker imports for it


def engine_name(engine) -> str:
    """The engine's name, its package noted for the workers that will run it."""
    ENGINE_PACKAGES[engine.info.name] = type(engine).__module__.rpartition(".")[0]
    return engine.info.name


class ClusterPool:
    """The workers this server made, and the cluster's room for more. Assumes the server is the
    cluster's only user of its CPU and GPU slots."""

    def __init__(self, address: str):
        self.address = connect(address)
        self.workers: list[Worker] = []
        self.running: dict[str, Worker] = {}  # job id -> its worker
        self.changed = threading.Condition()

    # --- what the cluster has --------------------------------------------------------------

    @staticmethod
    def totals() -> dict:
        resources = ray.cluster_resources()
        return {"gpus": int(resources.get("GPU", 0)), "cpus": int(resources.get("CPU", 0)),
                "nodes": sum(1 for node in ray.nodes() if node.get("Alive"))}

    def _room(self, needs: Needs, totals: dict) -> bool:
        used_gpus = sum(w.needs.gpus for w in self.workers)
        used_cpus = sum(w.needs.cpus for w in self.workers)
        return used_gpus + needs.gpus <= totals["gpus"] and used_cpus + needs.cpus <= totals["cpus"]

    def status(self) -> dict:
        totals = self.totals()
        with self.changed:
            workers = [w.to_json() for w in self.workers]
        busy = sum(1 for w in workers if w["busy"])
        def count(number: int, noun: str) -> str:
            return f"{number} {noun}{'' if number == 1 else 's'}"
        summary = (f"cluster: {count(totals['gpus'], 'GPU')}, {busy} busy" if totals["gpus"] else
                   f"cluster: {count(totals['nodes'], 'node')}, {count(totals['cpus'], 'CPU')}, no GPU; {busy} busy")
        return {"address": self.address, **totals, "busy": busy, "workers": workers, "summary": summary}

    # --- workers ---------------------------------------------------------------------------

    def frames(self, engine: str, needs: Needs, job_id: str, inputs, start: int, stop: threading.Event,
               on_worker=None) -> Iterator[tuple]:
        """Run the job on a worker of `engine` from frame `start`: (index, PNG, {name: PNG}) in the
        order the engine makes them. The worker is busy meanwhile, idle again after (discarded if it
        died: WorkerLost); the engine's own errors come as themselves. `on_worker(worker.to_json())`
        once the worker is chosen."""
        worker = self._acquire(engine, needs, stop)
        if on_worker is not None:
            on_worker(worker.to_json())
        lost = False
        with self.changed:
            self.running[job_id] = worker
        try:
            if stop.is_set():
                return
            yield from _stream(worker, job_id, inputs, start)
        except WorkerLost:
            lost = True
            raise
        finally:
            with self.changed:
                self.running.pop(job_id, None)
                if lost:
                    self._forget(worker)
                else:
                    worker.busy = False
                self.changed.notify_all()

    def stop(self, job_id: str) -> None:
        """Tell the worker running the job to stop (its engine sees its stop event)."""
        with self.changed:
            worker = self.running.get(job_id)
            self.changed.notify_all()  # a job waiting for a worker sees its stop event
        if worker is not None:
            try:
                worker.actor.stop.remote(job_id)
            except LOST:
                pass

    def _acquire(self, engine: str, needs: Needs, stop: threading.Event) -> Worker:
        while True:
            with self.changed:
                if stop.is_set():
                    raise Cancelled()
                totals = self.totals()
                if needs.gpus > totals["gpus"] or needs.cpus > totals["cpus"]:
                    raise ClusterError(f"the cluster at {self.address} has {totals['gpus']} GPUs and "
                                       f"{totals['cpus']} CPUs; a {engine} run needs {needs.describe()}"
                                       + (" (set the job's device to cpu to run it on CPUs)" if needs.gpus else ""))
                idle = next((w for w in self.workers if w.engine == engine and not w.busy and w.needs == needs), None)
                if idle is not None:
                    idle.busy = True
                    return idle
                if not self._room(needs, totals):
                    other = next((w for w in self.workers if not w.busy), None)
                    if other is None:
                        self.changed.wait(timeout=1.0)  # a job ends, or a node joins
                        continue
                    log.info("retiring an idle %s worker to make room for %s", other.engine, engine)
                    self._forget(other)
                    ray.kill(other.actor)
                package = ENGINE_PACKAGES.get(engine, "")
                worker = Worker(engine, needs, EngineWorker.options(**needs.options()).remote(engine, package))
                self.workers.append(worker)
            try:
                worker.where = ray.get(worker.actor.where.remote())
                log.info("%s worker on %s (node %s)", engine, worker.where["host"], worker.where["node"][:12])
                gpu = worker.where.get("gpu")
                if gpu and needs.gpu_memory_gib and gpu["memory_gib"] < needs.gpu_memory_gib:
                    log.warning("the %s worker on %s has a %s of %.0f GiB; the engine declares %.0f GiB",
                                engine, worker.where["host"], gpu["name"], gpu["memory_gib"], needs.gpu_memory_gib)
                return worker
            except LOST as error:
                log.warning("a new %s worker died at start: %s", engine, error)
                with self.changed:
                    self._forget(worker)
            except ray.exceptions.RayTaskError as error:  # the engine cannot start there
                with self.changed:
                    self._forget(worker)
                raise EngineError(f"the {engine} engine cannot start on the cluster: {error.cause}") from None

    def _forget(self, worker: Worker) -> None:
        if worker in self.workers:
            self.workers.remove(worker)

    def close(self) -> None:
        with self.changed:
            for worker in self.workers:
                ray.kill(worker.actor)
            self.workers.clear()


def _stream(worker: Worker, job_id: str, inputs, start: int) -> Iterator[tuple]:
    stream = worker.actor.render.options(num_returns="streaming").remote(job_id, inputs, start)
    try:
        for ref in stream:
            try:
                yield ray.get(ref)
            except ray.exceptions.RayTaskError as error:
                if isinstance(error.cause, Exception) and not isinstance(error.cause, LOST):
                    raise error.cause from None
                raise
    except LOST as error:
        raise WorkerLost(f"the {worker.engine} worker on {worker.where.get('host', '?')} (node "
                         f"{worker.where.get('node', '?')[:12]}) was lost: {type(error).__name__}") from None


def job_frames(pool: ClusterPool, engine: str, needs: Needs, job_id: str, inputs, first_missing: int, total: int,
               stop: threading.Event, on_worker=None) -> Iterator[tuple]:
    """The job's frames from the cluster, from `first_missing` on, each once: a worker that dies is
    replaced by another that starts at the first frame not yet yielded (engines are deterministic, so
    the frames equal an uninterrupted run's). ClusterError after MAX_TRIES lost workers."""
    yielded: set[int] = set()
    for attempt in range(1, MAX_TRIES + 1):
        start = next(index for index in range(first_missing, total + 1) if index not in yielded)
        if start >= total:
            return
        try:
            for frame in pool.frames(engine, needs, job_id, inputs, start, stop, on_worker):
                if frame[0] not in yielded:
                    yielded.add(frame[0])
                    yield frame
            return
        except Cancelled:
            return
        except WorkerLost as error:
            if attempt == MAX_TRIES:
                raise ClusterError(f"the job lost its worker {MAX_TRIES} times; last: {error}") from None
            log.warning("job %s: %s; taking it up again on another worker (try %d of %d)", job_id, error,
                        attempt + 1, MAX_TRIES)
