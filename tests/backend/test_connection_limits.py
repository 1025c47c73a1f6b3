"""What the server holds for clients, bounded before and after the handshake: hostile connections on
a real socket against `marionette serve` in its own process. Memory is read from the process's own
accounting (its peak resident set, VmHWM, and the in-flight bytes it reports), never from a clock."""

import socket
import time

from marionette_core.client import BackendClient
from marionette_core.png import decode_png

import probes
import synthetic

MiB = probes.MiB


def served_by(backend) -> BackendClient:
    client = BackendClient("127.0.0.1", backend.port, backend.token, timeout=60)
    client.connect()
    return client


def run_small_job(client: BackendClient) -> int:
    """A warp job small enough never to wait for the in-flight budget; the frames received."""
    job, reference = synthetic.warp_job(2, width=64, height=96)
    accepted = client.submit(job, reference)
    frames = 0
    while True:
        message = client.receive()
        if message.type == "frame":
            assert decode_png(message.attachments[0]).shape[:2] == (96, 64)
            frames += 1
        elif message.type == "done" and message.header["job_id"] == accepted["job_id"]:
            return frames


def in_flight(client: BackendClient) -> int:
    client.send({"type": "ping"})
    return client.expect("pong").header["in_flight_bytes"]


def test_strangers_are_refused_from_the_fixed_header(backend):
    """Four connections without the token each declare a 250 MiB first message and try to send
    200 MiB of it (the probe that once grew the server by 803 MiB): each is refused from its 12-byte
    header, the server's memory does not follow, and a real client is served meanwhile."""
    client = served_by(backend)
    client.ping()
    baseline = backend.peak_rss_kib()
    flood = probes.strangers(backend.port, connections=4, declared=250 * MiB, send=200 * MiB)
    try:
        assert flood.refused == 4
        assert any("first message must be a 'hello' of at most 65536 bytes" in answer for answer in flood.answers), \
            flood.answers
        assert run_small_job(client) == 2
        growth = backend.peak_rss_kib() - baseline
        assert growth < 32 * 1024, f"the server grew by {growth} KiB for strangers"
    finally:
        flood.close()
    client.ping()
    assert backend.alive() and backend.stored_jobs() == 1  # the real client's job only


def test_idle_strangers_cannot_lock_real_clients_out(backend):
    """More idle connections than the strangers' cap: the oldest are dropped, and a real client
    still gets in and is served."""
    idle = [socket.create_connection(("127.0.0.1", backend.port), timeout=30) for _ in range(40)]
    try:
        client = served_by(backend)
        client.ping()
        dropped = 0
        for sock in idle[:8]:  # the oldest 8 of 40 are past the cap of 32 (the real client made 41)
            sock.settimeout(30)
            try:
                dropped += sock.recv(1) == b""
            except OSError:
                dropped += 1
        assert dropped == 8
        assert run_small_job(client) == 2
    finally:
        for sock in idle:
            sock.close()


def test_the_in_flight_budget_holds_across_connections(start_backend):
    """Twelve connections with the token each declare a 31 MiB submit and send 24 MiB of it, slowly,
    against a 64 MiB budget: two fit (a message counts its JSON too), the others are told the backend
    is busy; the server holds no
    more than the budget (its own count, its peak memory), a real client is served meanwhile, and
    the budget frees when the connections go."""
    backend = start_backend(["--max-in-flight", "64"])
    client = served_by(backend)
    assert client.capabilities["limits"]["in_flight_bytes"] == 64 * MiB
    client.ping()
    baseline = backend.peak_rss_kib()
    flood = probes.members(backend.port, backend.token, connections=12, declared=31 * MiB, send=24 * MiB)
    try:
        assert flood.refused == 10, flood.answers
        assert all(answer.startswith("busy: the backend is receiving") for answer in flood.answers), flood.answers
        assert 62 * MiB < in_flight(client) <= 64 * MiB  # two reservations of their declared size
        assert run_small_job(client) == 2  # a small message never waits for the budget
        growth = backend.peak_rss_kib() - baseline
        assert growth < (64 + 32) * 1024, f"the server grew by {growth} KiB for a 64 MiB budget"
    finally:
        flood.close()
    for _ in range(200):  # the server notices the closed connections as it reads them
        if in_flight(client) == 0:
            break
        time.sleep(0.05)
    assert in_flight(client) == 0
    assert backend.alive() and backend.stored_jobs() == 1
