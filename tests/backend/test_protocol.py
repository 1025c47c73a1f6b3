"""Protocol v1: framing round trips, and a parser that meets garbage with ProtocolError only."""

import random
import socket
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marionette_core.client import BackendClient
from marionette_core.protocol import FIXED_HEADER, MAGIC, MessageDecoder, ProtocolError, encode_message

headers = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=20),
                                                                      st.booleans(), st.none()), max_size=5)
attachment_lists = st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=300)), max_size=4)


@given(headers, attachment_lists, st.integers(min_value=1, max_value=64))
def test_round_trip_in_any_chunking(extra, attachments, chunk):
    header = {**extra, "type": "x"}
    data = b"".join(encode_message(header, attachments) * 2)
    decoder = MessageDecoder()
    received = []
    for start in range(0, len(data), chunk):
        decoder.feed(data[start:start + chunk])
        received.extend(decoder.messages())
    assert len(received) == 2 and decoder.buffered == 0
    for message in received:
        assert message.attachments == [payload for _name, payload in attachments]
        assert message.type == "x" and all(message.header[k] == v for k, v in extra.items() if k != "attachments")


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_garbage_raises_protocol_error_or_waits(data):
    decoder = MessageDecoder(max_json=1024, max_payload=4096)
    try:
        decoder.feed(data)
        list(decoder.messages())
    except ProtocolError as error:
        assert error.code in ("bad_frame", "too_large")
    # Never more buffered than one message within the limits plus what was fed.
    assert decoder.buffered <= len(data)


@given(st.binary(min_size=0, max_size=200), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_wrong_types_and_lengths_in_well_framed_messages(body, json_length, payload_length):
    decoder = MessageDecoder(max_json=1 << 20, max_payload=1 << 20)
    frame = FIXED_HEADER.pack(MAGIC, json_length, payload_length) + body
    try:
        decoder.feed(frame)
        list(decoder.messages())
    except ProtocolError:
        pass


@pytest.mark.parametrize("header", [
    b"[1, 2]", b'"text"', b'{"no_type": 1}', b'{"type": 3}', b"{bad json", b"\xff\xfe",
    b'{"type": "x", "attachments": "nope"}', b'{"type": "x", "attachments": [{"name": "a", "size": -1}]}',
    b'{"type": "x", "attachments": [{"name": "a", "size": 5}]}', b'{"type": "x", "attachments": [{"size": 0}]}',
    b'{"type": "x", "attachments": [{"name": "a", "size": 1.5}]}',
])
def test_malformed_headers_are_bad_frames(header):
    decoder = MessageDecoder()
    decoder.feed(FIXED_HEADER.pack(MAGIC, len(header), 0) + header)
    with pytest.raises(ProtocolError) as error:
        decoder.next_message()
    assert error.value.code == "bad_frame"


def test_oversized_lengths_are_refused_before_buffering():
    decoder = MessageDecoder(max_json=100, max_payload=1000)
    with pytest.raises(ProtocolError) as error:
        decoder.feed(FIXED_HEADER.pack(MAGIC, 50, 10**9))
    assert error.value.code == "too_large"
    with pytest.raises(ProtocolError):
        MessageDecoder(max_json=100).feed(FIXED_HEADER.pack(MAGIC, 101, 0))


def test_truncated_message_waits_for_more():
    data = b"".join(encode_message({"type": "frame"}, [("f.png", b"x" * 1000)]))
    decoder = MessageDecoder()
    decoder.feed(data[:-1])
    assert decoder.next_message() is None and decoder.needed() == 1
    decoder.feed(data[-1:])
    assert decoder.next_message().attachments == [b"x" * 1000]


def test_server_survives_garbage_connections_with_bounded_memory(backend):
    rng = random.Random(5)
    good_hello = b"".join(encode_message({"type": "hello", "version": 1, "token": backend.token}))
    frames = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        FIXED_HEADER.pack(MAGIC, 2**31, 0),
        FIXED_HEADER.pack(MAGIC, 10, 2**31) + b"{}" * 5,
        FIXED_HEADER.pack(MAGIC, 5, 0) + b"{bad}",
        good_hello[:7],
        good_hello + FIXED_HEADER.pack(b"XXXX", 1, 1),
        good_hello + b"".join(encode_message({"type": "submit", "job": "nope"})),
        good_hello + b"".join(encode_message({"type": "submit", "job": {"engine": "warp", "poses": [{}] * 10**5}})),
        good_hello + b"".join(encode_message({"type": 5})),
    ]
    baseline = backend.rss_kib()
    for round_index in range(120):
        data = frames[round_index % len(frames)] if round_index < 60 else bytes(
            rng.getrandbits(8) for _ in range(rng.randint(1, 3000)))
        with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
                sock.settimeout(10)
                while sock.recv(65536):
                    pass
            except OSError:
                pass
    assert backend.alive()
    client = BackendClient("127.0.0.1", backend.port, backend.token)
    client.connect()
    client.ping()
    time.sleep(0.2)
    assert backend.rss_kib() - baseline < 64 * 1024, "server memory grew by more than 64 MiB"
