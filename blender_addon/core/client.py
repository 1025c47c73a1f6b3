"""A blocking protocol-v1 client (standard library only): the Blender extension's worker thread,
the tests and the benchmarks talk to the backend through it."""

from __future__ import annotations

import socket

from .protocol import PROTOCOL_VERSION, Message, MessageDecoder, ProtocolError, recv_message, send_message


class BackendError(Exception):
    """The backend answered with an error, or the connection failed; `code` says which."""

    def __init__(self, code: str, message: str, job_id: str | None = None):
        super().__init__(message)
        self.code = code
        self.job_id = job_id


class BackendClient:
    def __init__(self, host: str, port: int, token: str, timeout: float | None = 30.0):
        self.host, self.port, self.token, self.timeout = host, port, token, timeout
        self.sock: socket.socket | None = None
        self.decoder = MessageDecoder()
        self.capabilities: dict = {}

    def connect(self) -> dict:
        """Open the connection and shake hands; returns the server's capabilities."""
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as error:
            raise BackendError("connect", f"no backend at {self.host}:{self.port} ({error.strerror or error}); "
                                          f"start it with 'marionette serve' or check the address") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send({"type": "hello", "version": PROTOCOL_VERSION, "token": self.token, "client": "marionette"})
        welcome = self.expect("welcome")
        self.capabilities = welcome.header["capabilities"]
        return self.capabilities

    def send(self, header: dict, attachments: list[tuple[str, bytes]] | None = None) -> None:
        try:
            send_message(self.sock, header, attachments)
        except OSError as error:
            raise BackendError("connection", f"lost the backend connection: {error}") from None

    def receive(self) -> Message:
        """The next message; a server error message is raised as BackendError."""
        try:
            message = recv_message(self.sock, self.decoder)
        except ProtocolError as error:
            raise BackendError(error.code, str(error)) from None
        except socket.timeout:
            raise BackendError("timeout", "the backend did not answer in time") from None
        except OSError as error:
            raise BackendError("connection", f"lost the backend connection: {error}") from None
        if message is None:
            raise BackendError("connection", "the backend closed the connection")
        if message.type == "error":
            header = message.header
            raise BackendError(header.get("code", "internal"), header.get("message", ""), header.get("job_id"))
        return message

    def expect(self, kind: str) -> Message:
        message = self.receive()
        if message.type != kind:
            raise BackendError("bad_request", f"expected '{kind}' from the backend, got '{message.type}'")
        return message

    def submit(self, job: dict, reference_png: bytes, maps: list[bytes] | None = None) -> dict:
        """Queue a job; returns the 'accepted' header (job_id, total). Its frames follow."""
        attachments = [("reference.png", reference_png)]
        attachments += [(f"map/{index:06d}.png", data) for index, data in enumerate(maps or [])]
        self.send({"type": "submit", "job": job}, attachments)
        return self.expect("accepted").header

    def attach(self, job_id: str, from_index: int = 0) -> dict:
        self.send({"type": "attach", "job_id": job_id, "from_index": from_index})
        return self.expect("attached").header

    def cancel(self, job_id: str) -> None:
        self.send({"type": "cancel", "job_id": job_id})

    def ping(self) -> None:
        self.send({"type": "ping"})
        self.expect("pong")

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        self.connect()
        return self

    def __exit__(self, *_exc):
        self.close()
