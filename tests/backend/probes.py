"""Hostile clients on raw sockets: connections that declare large messages and send them slowly,
before the handshake (strangers) or after it (members, with the token). Used by the tests and by
`benchmarks/bench_connection_limits.py`."""

from __future__ import annotations

import json
import select
import socket
import time
from dataclasses import dataclass, field

from marionette_core.protocol import FIXED_HEADER, MAGIC, PROTOCOL_VERSION, MessageDecoder, encode_message, \
    recv_message

MiB = 1 << 20


@dataclass
class Flood:
    """Open connections of one attack, and what the server answered them."""
    sockets: list[socket.socket] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # the error messages the server sent
    refused: int = 0  # connections the server answered or closed
    sent: int = 0  # bytes the attackers got out

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    return sock


def _answers(socks: list[socket.socket], wait: float) -> dict[socket.socket, str]:
    """The errors the server sent on these connections within `wait` seconds (or "closed")."""
    answered: dict[socket.socket, str] = {}
    deadline = time.monotonic() + wait
    while len(answered) < len(socks) and (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([s for s in socks if s not in answered], [], [], left)
        for sock in readable:
            try:
                message = recv_message(sock, MessageDecoder())
            except (OSError, ValueError):
                message = None
            answered[sock] = "closed" if message is None else \
                f"{message.header.get('code')}: {message.header.get('message')}"
    return answered


def _declare(sock: socket.socket, payload: int, kind: str) -> None:
    """The start of a message of `payload` attachment bytes: its fixed header and JSON, no payload yet."""
    body = json.dumps({"type": kind, "attachments": [{"name": "reference.png", "size": payload}]}).encode()
    sock.sendall(FIXED_HEADER.pack(MAGIC, len(body), payload) + body)


def _send_slowly(flood: Flood, live: list[socket.socket], amount: int, chunk: int = MiB) -> None:
    """Up to `amount` bytes on each live connection, a chunk at a time, round robin (all of them in
    flight together); a connection the server closed drops out."""
    block = bytes(chunk)
    for _round in range(amount // chunk):
        for sock in list(live):
            try:
                sock.sendall(block)
                flood.sent += chunk
            except OSError:
                live.remove(sock)
                flood.refused += 1


def _flood(port: int, connections: int, declared: int, send: int, wait: float, token: str | None) -> Flood:
    """`connections` connections, each (after the handshake, with a token) declaring a message of
    `declared` payload bytes; then, on those the server has not answered within `wait` seconds,
    `send` bytes of it, all of them together."""
    flood = Flood()
    for _ in range(connections):
        sock = _connect(port)
        flood.sockets.append(sock)
        if token is not None:
            for buffer in encode_message({"type": "hello", "version": PROTOCOL_VERSION, "token": token}):
                sock.sendall(buffer)
            welcome = recv_message(sock, MessageDecoder())
            assert welcome is not None and welcome.type == "welcome", welcome
        _declare(sock, declared, "hello" if token is None else "submit")
    answered = _answers(flood.sockets, wait)
    flood.answers = list(answered.values())
    flood.refused = len(answered)
    _send_slowly(flood, [sock for sock in flood.sockets if sock not in answered], send)
    return flood


def strangers(port: int, connections: int, declared: int, send: int, wait: float = 2.0) -> Flood:
    """Connections that never show the token, each opening with a message of `declared` payload
    bytes and sending `send` bytes of it."""
    return _flood(port, connections, declared, send, wait, token=None)


def members(port: int, token: str, connections: int, declared: int, send: int, wait: float = 2.0) -> Flood:
    """Connections that show the token, then each declare a submit of `declared` payload bytes and
    send `send` bytes of it."""
    return _flood(port, connections, declared, send, wait, token=token)
