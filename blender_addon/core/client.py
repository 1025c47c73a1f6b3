"""A blocking protocol client (standard library only): the Blender extension's worker thread,
the tests and the benchmarks talk to the backend through it.

Every frame received is checked from its PNG header before the caller sees it: it must have the
job's size (or, for a job whose size the backend did not say, be within the backend's limits), so a
faulty backend cannot make Blender load a huge image."""

from __future__ import annotations

import socket

from .image_header import (DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, ImageHeaderError, ImageTooLargeError,
                           check_image_size, image_size)
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
        self.frame_sizes: dict[str, tuple[int, int]] = {}  # job id -> (width, height) its frames must have

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
        if message.type == "frame":
            self.check_frame(message)
        return message

    def check_frame(self, message: Message) -> None:
        """Raise BackendError("bad_image") unless the frame's attachment is a PNG of the job's size
        (within the backend's announced limits when the size is unknown) and any other image with
        it is within those limits, read from their headers: nothing is decoded."""
        header = message.header
        job_id = header.get("job_id")
        what = f"frame {header.get('frame', header.get('index'))} of job {str(job_id)[:8]}"
        refused = "the frame was refused; check the backend (its log, its version)"
        if not message.attachments:
            raise BackendError("bad_image", f"the backend sent {what} without its image; {refused}", job_id)
        try:
            size = image_size(message.attachments[0])
        except ImageHeaderError as error:
            raise BackendError("bad_image", f"the backend sent {what}, which is not a readable image ({error}); "
                                            f"{refused}", job_id) from None
        limits = self.capabilities.get("limits", {})
        max_side, max_pixels = limits.get("max_side"), limits.get("max_pixels")
        max_side = max_side if type(max_side) is int else DEFAULT_MAX_SIDE
        max_pixels = max_pixels if type(max_pixels) is int else DEFAULT_MAX_PIXELS
        expected = self.frame_sizes.get(job_id)
        if expected is not None:
            fits, wanted = (size.width, size.height) == expected, f"{expected[0]}x{expected[1]} PNGs"
        else:
            fits = max(size.width, size.height) <= max_side and size.width * size.height <= max_pixels
            wanted = f"PNGs of at most {max_side} pixels per side and {max_pixels} pixels"
        if size.format != "PNG" or not fits:
            raise BackendError("bad_image", f"the backend sent {what} as a {size.width}x{size.height} {size.format}, "
                                            f"but the job's frames are {wanted}; {refused}", job_id)
        # Other images that come with a frame (e.g. the face crop that drove it): within the limits.
        for meta, data in zip(header.get("attachments", [])[1:], message.attachments[1:]):
            if meta["name"].lower().endswith((".png", ".jpg", ".jpeg")):
                try:
                    check_image_size(data, f"image {meta['name'][:80]!r} of {what}", max_side, max_pixels)
                except (ImageHeaderError, ImageTooLargeError) as error:
                    raise BackendError("bad_image", f"the backend sent a bad image: {error}; {refused}",
                                       job_id) from None

    def _remember_size(self, header: dict) -> None:
        width, height = header.get("width"), header.get("height")
        if type(width) is int and type(height) is int:
            self.frame_sizes[header["job_id"]] = (width, height)

    def expect(self, kind: str) -> Message:
        message = self.receive()
        if message.type != kind:
            raise BackendError("bad_request", f"expected '{kind}' from the backend, got '{message.type}'")
        return message

    def submit(self, job: dict, reference_png: bytes, tracks: dict[str, list[bytes]] | None = None,
               audio: bytes | None = None) -> dict:
        """Queue a job; returns the 'accepted' header (job_id, total). Its frames follow.

        tracks: the engine's image inputs by name, one PNG (or JPEG) per frame; audio: the sound of
        the frame range as a file (WAV, FLAC, ...)."""
        attachments = [("reference.png", reference_png)]
        for name, images in (tracks or {}).items():
            attachments += [(f"track/{name}/{index:06d}.png", data) for index, data in enumerate(images)]
        if audio is not None:
            attachments.append(("audio", audio))
        self.send({"type": "submit", "job": job}, attachments)
        accepted = self.expect("accepted").header
        self._remember_size(accepted)
        return accepted

    def lip_sync(self, audio: bytes, fps: float, weights: str | None = None, filename: str = "audio",
                 device: str | None = None) -> tuple[dict, bytes]:
        """Face landmark offsets of a sound (any common format) at `fps`: the answer header and the
        offsets as raw little-endian float32 of header["shape"] (frames, 468, 3)."""
        header = {"type": "lip_sync", "fps": float(fps)}
        if weights:
            header["weights"] = weights
        if device:
            header["device"] = device
        self.send(header, [(f"audio/{filename}", audio)])
        answer = self.expect("lip_sync")
        try:
            return answer.header, answer.attachment("offsets.f32")
        except KeyError:
            raise BackendError("bad_request", "the backend's lip-sync answer has no offsets") from None

    def attach(self, job_id: str, from_index: int = 0) -> dict:
        self.send({"type": "attach", "job_id": job_id, "from_index": from_index})
        attached = self.expect("attached").header
        self._remember_size(attached)
        return attached

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
