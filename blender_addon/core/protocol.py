"""The Marionette wire protocol (spec: docs/PROTOCOL.md). Standard library only: the Blender extension
(client) and the backend (server) share this one implementation.

A message is a 12-byte fixed header, a JSON object, then its binary attachments:

    "MAR1" | u32 json_length | u32 payload_length | JSON (UTF-8) | attachment bytes ...

The JSON object has a string "type" and, when the payload is not empty, "attachments": a list of
{"name": str, "size": int} whose sizes add up to payload_length, in payload order.

`MessageDecoder` is transport-free (feed it bytes, take messages out) and never buffers more than
one message that passed the size limits; `send_message`/`recv_message` wrap it for blocking sockets.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field

PROTOCOL_VERSION = 2  # 2: engines declare inputs; jobs carry named image tracks, text and audio
MAGIC = b"MAR1"
FIXED_HEADER = struct.Struct(">4sII")
DEFAULT_PORT = 47316

# Default limits; a server announces its own in the handshake.
MAX_JSON_BYTES = 4 * 1024 * 1024
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024
MAX_ATTACHMENTS = 100_000

# Error codes carried by {"type": "error", "code": ..., "message": ...}.
ERROR_CODES = {
    "bad_frame": "the bytes are not a well-formed message; the connection is closed",
    "too_large": "a message is over the size limits",
    "bad_request": "a message is well formed but its content is wrong",
    "version": "the client speaks another protocol version",
    "unauthorized": "missing or wrong token",
    "unknown_job": "no job with that id",
    "unknown_engine": "the server has no such engine",
    "limit": "the job exceeds a limit (frames, resolution)",
    "busy": "the backend is receiving as much as it may hold at once; try again shortly",
    "engine_failed": "the engine failed on the job",
    "cancelled": "the job was cancelled",
    "internal": "the server failed unexpectedly",
}


class ProtocolError(Exception):
    """Malformed or oversized input; `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    header: dict
    attachments: list[bytes] = field(default_factory=list)

    @property
    def type(self) -> str:
        return self.header["type"]

    def attachment(self, name: str) -> bytes:
        for meta, data in zip(self.header.get("attachments", ()), self.attachments):
            if meta["name"] == name:
                return data
        raise KeyError(name)


def encode_message(header: dict, attachments: list[tuple[str, bytes]] | None = None) -> list[bytes]:
    """The message as a list of buffers (for sendmsg/writelines: attachments are not copied)."""
    attachments = attachments or []
    header = dict(header)
    if attachments:
        header["attachments"] = [{"name": name, "size": len(data)} for name, data in attachments]
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    payload_length = sum(len(data) for _name, data in attachments)
    return [FIXED_HEADER.pack(MAGIC, len(body), payload_length), body, *(data for _name, data in attachments)]


class MessageDecoder:
    """Incremental decoder: feed() bytes as they arrive, then iterate messages().

    Raises ProtocolError on bad magic, oversized lengths (before any of that body is buffered),
    invalid JSON, or an attachment table that does not match the payload.
    """

    def __init__(self, max_json: int = MAX_JSON_BYTES, max_payload: int = MAX_PAYLOAD_BYTES):
        self.max_json = max_json
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._lengths: tuple[int, int] | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if self._lengths is None and len(self._buffer) >= FIXED_HEADER.size:
            self._read_fixed_header()

    @property
    def pending_size(self) -> int | None:
        """JSON and payload bytes of the message being received, once its fixed header is in
        (before any of them is buffered); None before that."""
        if self._lengths is None and len(self._buffer) >= FIXED_HEADER.size:
            self._read_fixed_header()
        return None if self._lengths is None else sum(self._lengths)

    def needed(self) -> int:
        """Bytes still missing for the next message (at least 1 while waiting for a header)."""
        if self._lengths is None:
            return max(1, FIXED_HEADER.size - len(self._buffer))
        json_length, payload_length = self._lengths
        return max(0, FIXED_HEADER.size + json_length + payload_length - len(self._buffer))

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed."""
        if self._lengths is None:
            if len(self._buffer) < FIXED_HEADER.size:
                return None
            self._read_fixed_header()
        json_length, payload_length = self._lengths
        total = FIXED_HEADER.size + json_length + payload_length
        if len(self._buffer) < total:
            return None
        body = bytes(self._buffer[FIXED_HEADER.size:FIXED_HEADER.size + json_length])
        payload = memoryview(self._buffer)[FIXED_HEADER.size + json_length:total]
        try:
            header = _parse_header(body, payload_length)
            attachments, offset = [], 0
            for meta in header.get("attachments", ()):
                attachments.append(bytes(payload[offset:offset + meta["size"]]))
                offset += meta["size"]
        finally:
            payload.release()
        del self._buffer[:total]
        self._lengths = None
        if len(self._buffer) >= FIXED_HEADER.size:
            self._read_fixed_header()
        return Message(header, attachments)

    def messages(self):
        while (message := self.next_message()) is not None:
            yield message

    def _read_fixed_header(self) -> None:
        magic, json_length, payload_length = FIXED_HEADER.unpack_from(self._buffer)
        if magic != MAGIC:
            raise ProtocolError("bad_frame", f"bad magic {bytes(magic)!r}; not a Marionette v1 peer")
        if json_length == 0 or json_length > self.max_json:
            raise ProtocolError("too_large" if json_length else "bad_frame",
                                f"JSON header of {json_length} bytes (limit {self.max_json})")
        if payload_length > self.max_payload:
            raise ProtocolError("too_large", f"payload of {payload_length} bytes (limit {self.max_payload})")
        self._lengths = (json_length, payload_length)


def _parse_header(body: bytes, payload_length: int) -> dict:
    try:
        header = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ProtocolError("bad_frame", f"message header is not JSON: {error}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise ProtocolError("bad_frame", "message header must be a JSON object with a string 'type'")
    attachments = header.get("attachments", [])
    if not isinstance(attachments, list) or len(attachments) > MAX_ATTACHMENTS:
        raise ProtocolError("bad_frame", "'attachments' must be a list")
    total = 0
    for meta in attachments:
        if (not isinstance(meta, dict) or not isinstance(meta.get("name"), str)
                or type(meta.get("size")) is not int or meta["size"] < 0):
            raise ProtocolError("bad_frame", "each attachment needs a string 'name' and a non-negative int 'size'")
        total += meta["size"]
    if total != payload_length:
        raise ProtocolError("bad_frame", f"attachment sizes add up to {total}, payload is {payload_length} bytes")
    return header


# --- blocking sockets (the Blender client, tests, tools) -------------------------------------

def send_message(sock: socket.socket, header: dict, attachments: list[tuple[str, bytes]] | None = None) -> None:
    for buffer in encode_message(header, attachments):
        sock.sendall(buffer)


def recv_message(sock: socket.socket, decoder: MessageDecoder) -> Message | None:
    """Block until a whole message arrives; None when the peer closed the connection cleanly."""
    while True:
        message = decoder.next_message()
        if message is not None:
            return message
        chunk = sock.recv(max(65536, min(decoder.needed(), 16 * 1024 * 1024)))
        if not chunk:
            if decoder.buffered:
                raise ProtocolError("bad_frame", "connection closed in the middle of a message")
            return None
        decoder.feed(chunk)


def error_message(code: str, message: str, **extra) -> dict:
    return {"type": "error", "code": code, "message": message, **extra}
