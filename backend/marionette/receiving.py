"""What a connection may make the server hold, before and after the handshake.

A connection that has not shown the token may send one small hello and nothing else: a first message
that declares more is refused from its 12-byte fixed header, before any of it is read. Such
connections are capped in number; a newcomer past the cap drops the oldest one, so idle strangers
cannot lock real clients out (a real hello takes milliseconds), and each has the handshake timeout.
Once authenticated, every message larger than `small_message` reserves its declared size from one
in-flight budget shared by all connections before its body is read (else `busy`), and a message
that stalls is dropped. A connection reads exactly the message it is on, nothing of the next.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass

from marionette_core.protocol import FIXED_HEADER, Message, MessageDecoder, ProtocolError

from .job_inputs import Limits

READ_CHUNK = 1 << 20
MiB = 1 << 20


@dataclass
class ServerLimits(Limits):
    """The job limits, and what the server receives at once."""
    max_json: int = 4 * MiB
    max_payload: int = 256 * MiB
    in_flight: int = 1024 * MiB  # bytes of messages being received, all connections together
    small_message: int = 64 * 1024  # a message no larger than this never waits for the in-flight budget
    hello_bytes: int = 64 * 1024  # the most a connection may send before its handshake succeeds
    max_strangers: int = 32  # connections that have not completed the handshake
    max_connections: int = 256
    stalled_message: float = 60.0  # seconds without a byte in the middle of a message
    decoding_jobs: int = 2  # submits whose images are decoded at once; the others wait their turn

    def to_json(self) -> dict:
        return {**super().to_json(), "max_json_bytes": self.max_json, "max_payload_bytes": self.max_payload,
                "in_flight_bytes": self.in_flight}


class Busy(Exception):
    """The server holds as much as it may at once; the client should try again shortly."""


class InFlightBudget:
    """Bytes of messages being received across connections, reserved from their declared sizes
    before any of their bodies is read."""

    def __init__(self, total: int):
        self.total, self.used = total, 0

    def reserve(self, size: int) -> None:
        if self.used + size > self.total:
            raise Busy(f"the backend is receiving {self.used / MiB:.0f} MiB from other clients and may hold "
                       f"{self.total / MiB:.0f} MiB at once; a message of {size / MiB:.1f} MiB waits: try again "
                       f"shortly")
        self.used += size

    def release(self, size: int) -> None:
        self.used -= size


class Receiver:
    """The limits above, applied to every connection of one server."""

    def __init__(self, limits: ServerLimits):
        self.limits = limits
        self.budget = InFlightBudget(limits.in_flight)
        self._strangers: OrderedDict[int, asyncio.StreamWriter] = OrderedDict()  # not yet authenticated

    def decoder(self) -> MessageDecoder:
        """The decoder of an authenticated connection."""
        return MessageDecoder(self.limits.max_json, self.limits.max_payload)

    def forget(self, writer: asyncio.StreamWriter) -> None:
        """The connection showed the token, or closed: it no longer counts among the strangers."""
        self._strangers.pop(id(writer), None)

    def admit(self, writer: asyncio.StreamWriter) -> None:
        """Count a connection that has not shown the token yet; past the cap the oldest such one is
        dropped, so idle strangers cannot lock real clients out (a real hello takes milliseconds)."""
        while len(self._strangers) >= self.limits.max_strangers:
            _key, oldest = self._strangers.popitem(last=False)
            oldest.close()
        self._strangers[id(writer)] = writer

    async def read_hello(self, reader: asyncio.StreamReader) -> Message | None:
        """The first message, at most `hello_bytes` with no attachments: its fixed header is read
        alone, and a larger declaration is refused before anything more is read."""
        decoder = MessageDecoder(self.limits.hello_bytes - FIXED_HEADER.size, 0)
        try:
            message, _reserved = await self.read(reader, decoder, stranger=True)
        except ProtocolError as error:
            if error.code != "too_large":
                raise
            raise ProtocolError("too_large", f"the first message must be a 'hello' of at most "
                                             f"{self.limits.hello_bytes} bytes without attachments ({error}); "
                                             f"nothing more is read before the token is checked") from None
        return message

    async def read(self, reader: asyncio.StreamReader, decoder: MessageDecoder,
                    stranger: bool = False) -> tuple[Message | None, int]:
        """The next message and the in-flight bytes reserved for it (release them when done). Reads
        exactly what the message needs, so nothing of the next one is buffered; a large message
        reserves its declared size from the budget before its body is read."""
        reserved = 0
        try:
            while True:
                message = decoder.next_message()
                if message is not None:
                    return message, reserved
                size = decoder.pending_size
                if size is not None and not reserved and not stranger and size > self.limits.small_message:
                    self.budget.reserve(size)
                    reserved = size
                read = reader.read(min(READ_CHUNK, decoder.needed()))
                chunk = await (asyncio.wait_for(read, self.limits.stalled_message) if decoder.buffered else read)
                if not chunk:
                    self.budget.release(reserved)
                    return None, 0
                decoder.feed(chunk)
        except BaseException:
            self.budget.release(reserved)
            raise
