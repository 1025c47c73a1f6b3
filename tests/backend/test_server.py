"""The backend as a real process on a real loopback socket."""

import socket

import pytest

from marionette_core.client import BackendClient, BackendError
from marionette_core.png import decode_png
from marionette_core.protocol import encode_message

import synthetic


def client_for(backend, token=None) -> BackendClient:
    client = BackendClient("127.0.0.1", backend.port, token or backend.token, timeout=60)
    client.connect()
    return client


def collect(client, job_id, until=None):
    """Frames of a job as {index: png}, and the message that ended the stream."""
    frames = {}
    while True:
        message = client.receive()
        if message.type == "frame" and message.header["job_id"] == job_id:
            frames[message.header["index"]] = message.attachments[0]
            if until is not None and len(frames) >= until:
                return frames, None
        elif message.type in ("done", "cancelled"):
            return frames, message


def test_handshake_capabilities_and_a_job(backend):
    client = client_for(backend)
    engines = {engine["name"]: engine for engine in client.capabilities["engines"]}
    assert engines["warp"]["needs_weights"] is False and engines["warp"]["device"] == "cpu"
    assert client.capabilities["limits"]["max_frames"] > 0
    client.ping()
    job, reference = synthetic.warp_job(8)
    accepted = client.submit(job, reference)
    assert accepted["total"] == 8
    progress = client.expect("progress").header
    assert progress["job_id"] == accepted["job_id"] and progress["state"] in ("queued", "running")
    frames, end = collect(client, accepted["job_id"])
    assert end.type == "done"
    assert sorted(frames) == list(range(8))
    image = decode_png(frames[3])
    assert image.shape == (384, 256, 3)
    stored = backend.store / accepted["job_id"] / "frames"
    assert sorted(p.name for p in stored.iterdir()) == [f"{i:06d}.png" for i in range(8)]
    assert (backend.store / accepted["job_id"] / "frames" / "000003.png").read_bytes() == frames[3]
    client.close()


def test_wrong_token_and_wrong_version_are_refused(backend):
    with pytest.raises(BackendError) as refused:
        client_for(backend, token="0" * 64)
    assert refused.value.code == "unauthorized"
    with socket.create_connection(("127.0.0.1", backend.port)) as sock:
        for buffer in encode_message({"type": "hello", "version": 99, "token": backend.token}):
            sock.sendall(buffer)
        reply = sock.recv(4096)
        assert b'"code":"version"' in reply
    # Nothing was run for them, and the server still serves a good client.
    client_for(backend).ping()


def test_two_clients_at_once(backend):
    first, second = client_for(backend), client_for(backend)
    job_a, reference = synthetic.warp_job(6)
    job_b, _ = synthetic.warp_job(5)
    a = first.submit(job_a, reference)
    b = second.submit(job_b, reference)
    frames_b, end_b = collect(second, b["job_id"])
    frames_a, end_a = collect(first, a["job_id"])
    assert (end_a.type, end_b.type) == ("done", "done")
    assert sorted(frames_a) == list(range(6)) and sorted(frames_b) == list(range(5))


def test_cancel_stops_the_job(backend):
    client = client_for(backend)
    job, reference = synthetic.warp_job(400)
    accepted = client.submit(job, reference)
    frames, _ = collect(client, accepted["job_id"], until=3)
    client.cancel(accepted["job_id"])
    ending = None
    while ending is None:
        message = client.receive()
        if message.type == "cancelled":
            ending = message
    done = len(list((backend.store / accepted["job_id"] / "frames").glob("*.png")))
    assert 3 <= done < 400
    listed = BackendClient("127.0.0.1", backend.port, backend.token)
    listed.connect()
    listed.send({"type": "jobs"})
    jobs = {j["job_id"]: j for j in listed.expect("jobs").header["jobs"]}
    assert jobs[accepted["job_id"]]["state"] == "cancelled"


def test_drop_and_reattach_loses_no_frame(backend):
    job, reference = synthetic.warp_job(30)
    first = client_for(backend)
    accepted = first.submit(job, reference)
    job_id = accepted["job_id"]
    early, _ = collect(first, job_id, until=5)
    first.sock.close()  # the client drops mid-job

    second = client_for(backend)
    attached = second.attach(job_id, from_index=len(early))
    assert attached["total"] == 30 and attached["frames"][0] == 101
    rest, end = collect(second, job_id)
    assert end.type == "done"
    assert sorted(early) + sorted(rest) == list(range(30))  # every frame once, none missing


def test_killed_backend_resumes_from_the_first_missing_frame(start_backend):
    server = start_backend()
    job, reference = synthetic.warp_job(60)
    client = client_for(server)
    job_id = client.submit(job, reference)["job_id"]
    collect(client, job_id, until=10)
    server.kill()
    frames_folder = server.store / job_id / "frames"
    kept = {p.name: p.stat().st_mtime_ns for p in frames_folder.glob("*.png")}
    assert 10 <= len(kept) < 60
    for name in kept:  # a kill mid-write may leave a temporary file, never a partial frame
        decode_png((frames_folder / name).read_bytes())
    # What a kill during a frame's write leaves (made here so the clean-up is always exercised).
    (frames_folder / f".{len(kept):06d}.png.99999.tmp").write_bytes(b"\x89PNG half")

    restarted = start_backend()
    client = client_for(restarted)
    client.attach(job_id, from_index=0)
    frames, end = collect(client, job_id)
    assert end.type == "done" and sorted(frames) == list(range(60))
    assert not list((server.store / job_id).rglob(".*.tmp")), "the restart left a partial write behind"
    # The frames made before the kill were kept, not made again.
    for name, mtime in kept.items():
        assert (frames_folder / name).stat().st_mtime_ns == mtime


@pytest.mark.parametrize("job_id", ["../../etc", "..", "/etc/passwd", "0" * 31 + "g", "A" * 32, 7, None])
def test_job_ids_cannot_escape_the_store(backend, job_id):
    client = client_for(backend)
    for kind in ("attach", "cancel"):
        client.send({"type": kind, "job_id": job_id})
        with pytest.raises(BackendError) as error:
            client.receive()
        assert error.value.code == "unknown_job"
    client.ping()


def test_bad_jobs_get_clear_errors(backend):
    client = client_for(backend)
    job, reference = synthetic.warp_job(3)
    cases = [
        ({**job, "engine": "nope"}, reference, "unknown_engine", "no engine 'nope'"),
        (job, b"not an image", "bad_request", "reference image is not a readable image"),
        ({**job, "poses": []}, reference, "bad_request", "needs 'poses'"),
        ({**job, "frames": [1]}, reference, "bad_request", "one integer frame number per pose"),
        ({**job, "width": 99999, "height": 64}, reference, "limit", "over the limit"),
        ({**job, "poses": [{"people": "x"}] * 3}, reference, "bad_request", "keypoints of frame 0"),
    ]
    for bad_job, bad_reference, code, words in cases:
        with pytest.raises(BackendError) as error:
            client.submit(bad_job, bad_reference)
        assert error.value.code == code and words in str(error.value), (code, str(error.value))
    client.ping()  # the same connection still works
    assert not [p for p in backend.store.iterdir() if not p.name.startswith(".")], "a refused job was stored"


def test_token_file_is_private_and_other_addresses_warn(tmp_path, start_backend):
    server = start_backend()
    assert (server.token_file.stat().st_mode & 0o777) == 0o600
    assert len(server.token) == 64
    server.stop()
    wide = start_backend(extra=("--host", "0.0.0.0"))
    wide.stop()
    assert "prefer the default loopback address" in wide.process.stderr.read()
