"""Image sizes read from file headers (standard library only), so that an image can be checked
against the limits before anything decodes it.

A PNG of a few MiB can declare 30000x30000 pixels (a run of zeros compresses a thousand to one);
decoding it costs gigabytes. The size is in the first bytes: PNG's IHDR chunk, JPEG's frame header
(SOF). Marionette exchanges PNG and JPEG only: every other format a decoder such as OpenCV would
take (BMP, TIFF, WebP, PNM, EXR, ...) is another header to trust, so it is refused by name.
"""

from __future__ import annotations

import re
import struct
import zlib
from typing import NamedTuple

# The backend's default limits (a server announces its own in the handshake).
DEFAULT_MAX_SIDE = 4096
DEFAULT_MAX_PIXELS = 4096 * 4096

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# colour type -> the bit depths it allows
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
_PNG_MAX_SIDE = 2**31 - 1  # the PNG specification's own bound

# JPEG frame headers: SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC), which share the range.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM and RST0..7 carry no length
# Real files carry a few dozen segments (APPn, DQT, DHT, COM) before their frame header; a bound
# keeps the walk over a hostile file short.
_JPEG_MAX_SEGMENTS = 1024
# Fill bytes (0xFF) allowed before a marker: encoders write none or a few; a longer run is refused
# there, so the walk looks at no more than about 1024 x 260 bytes of any file.
JPEG_MAX_FILL = 256
_NOT_FILL = re.compile(rb"[^\xff]")

# Formats named in the refusal of an image that is neither PNG nor JPEG: (offset, magic, name).
_OTHER_FORMATS = (
    (0, b"BM", "BMP"), (0, b"II*\x00", "TIFF"), (0, b"MM\x00*", "TIFF"), (0, b"GIF8", "GIF"), (8, b"WEBP", "WebP"),
    (0, b"v/1\x01", "OpenEXR"), (0, b"#?RADIANCE", "Radiance HDR"), (0, b"#?RGBE", "Radiance HDR"),
    (4, b"ftypavif", "AVIF"), (4, b"ftypheic", "HEIF"), (4, b"jP  ", "JPEG 2000"), (0, b"\xffO\xffQ", "JPEG 2000"),
    (0, b"\x59\xa6\x6a\x95", "Sun raster"),
)
_NETPBM = re.compile(rb"P[1-7Ff]\s")  # PBM/PGM/PPM/PAM/PFM: "P", a digit or F, white space


class ImageHeaderError(ValueError):
    """Bytes that are not a PNG or JPEG file, or whose header is cut short or inconsistent."""


class ImageTooLargeError(ValueError):
    """An image whose header declares more pixels than the limits allow."""


class ImageSize(NamedTuple):
    format: str  # "PNG" or "JPEG"
    width: int  # pixels
    height: int


def image_size(data: bytes) -> ImageSize:
    """Format and size of a PNG or JPEG file, from its header alone.

    Raises ImageHeaderError (the message is a clause: "it is a BMP file, ...") for any other format,
    a truncated header, or a header that no decoder would accept.
    """
    if data[:8] == PNG_SIGNATURE:
        return _png_size(data)
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg_size(data)
    if data[:4] == PNG_SIGNATURE[:4] or data[:2] == b"\xff\xd8":
        raise ImageHeaderError("its file signature is damaged")
    for offset, magic, name in _OTHER_FORMATS:
        if data[offset:offset + len(magic)] == magic:
            raise ImageHeaderError(f"it is a {name} file; only PNG and JPEG are accepted")
    if _NETPBM.match(data[:3]):
        raise ImageHeaderError("it is a Netpbm file; only PNG and JPEG are accepted")
    raise ImageHeaderError("it is not a PNG or JPEG file" if data else "it is empty")


def check_image_size(data: bytes, what: str, max_side: int = DEFAULT_MAX_SIDE,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageSize:
    """The size of a PNG/JPEG file, checked against the limits before it is decoded.

    `what` names the image in messages ("reference image", "control map 3"). Raises
    ImageHeaderError ("the reference image is not a readable image: it is a BMP file; ...") or
    ImageTooLargeError ("the reference image is 30000x30000 pixels, over the limit of 4096 ...").
    """
    try:
        size = image_size(data)
    except ImageHeaderError as error:
        raise ImageHeaderError(f"the {what} is not a readable image: {error}") from None
    if max(size.width, size.height) > max_side:
        raise ImageTooLargeError(f"the {what} is {size.width}x{size.height} pixels, over the limit of {max_side} "
                                 f"pixels per side; scale it down to fit {max_side}x{max_side}")
    if size.width * size.height > max_pixels:
        raise ImageTooLargeError(f"the {what} is {size.width}x{size.height} pixels ({size.width * size.height}), "
                                 f"over the limit of {max_pixels} pixels; scale it down")
    return size


def _png_size(data: bytes) -> ImageSize:
    # Signature, then IHDR first: u32 length (13), b"IHDR", 13 bytes, u32 CRC of type + data.
    if len(data) < 33:
        raise ImageHeaderError("the PNG ends inside its header (a truncated file)")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise ImageHeaderError("the PNG does not start with its IHDR header")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if struct.unpack_from(">I", data, 29)[0] != zlib.crc32(data[12:29]):
        raise ImageHeaderError("the PNG's IHDR header is corrupt (CRC mismatch)")
    if not (0 < width <= _PNG_MAX_SIDE and 0 < height <= _PNG_MAX_SIDE):
        raise ImageHeaderError(f"the PNG declares an invalid size of {width}x{height} pixels")
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()) or compression or filtering or interlace > 1:
        raise ImageHeaderError(f"the PNG's header is invalid (bit depth {depth}, colour type {colour}, "
                               f"compression {compression}, filter {filtering}, interlace {interlace})")
    return ImageSize("PNG", width, height)


def _jpeg_size(data: bytes) -> ImageSize:
    """Walk the marker segments after SOI up to the first frame header (SOF)."""
    truncated = "the JPEG ends before its frame header (a truncated file)"
    pos, end = 2, len(data)
    for _segment in range(_JPEG_MAX_SEGMENTS):
        if pos >= end:
            raise ImageHeaderError(truncated)
        if data[pos] != 0xFF:
            raise ImageHeaderError(f"the JPEG has no marker at byte {pos}, where its next segment should start")
        marker_at = _NOT_FILL.search(data, pos, pos + JPEG_MAX_FILL + 2)  # prefix, fill bytes, marker
        if marker_at is None:
            if pos + JPEG_MAX_FILL + 2 > end:
                raise ImageHeaderError(truncated)
            raise ImageHeaderError(f"the JPEG has a run of more than {JPEG_MAX_FILL} fill bytes at byte {pos}; no "
                                   f"encoder writes that")
        pos = marker_at.start()
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD8, 0xD9, 0xDA):  # SOI again, EOI or start of scan: no frame header came
            raise ImageHeaderError("the JPEG has no frame header (SOF) before its image data")
        if pos + 2 > end:
            raise ImageHeaderError(truncated)
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            raise ImageHeaderError(f"the JPEG has a segment of invalid length {length} at byte {pos}")
        if marker in _JPEG_SOF:
            # length, precision (1), height (2), width (2), components (1)
            if length < 8 or pos + 8 > end:
                raise ImageHeaderError(truncated)
            _precision, height, width, components = struct.unpack_from(">BHHB", data, pos + 2)
            if width == 0 or height == 0 or components == 0:
                raise ImageHeaderError(f"the JPEG's frame header declares {width}x{height} pixels and {components} "
                                   f"components (an image height given later by a DNL marker is not supported)")
            return ImageSize("JPEG", width, height)
        pos += length
    raise ImageHeaderError(f"the JPEG has no frame header (SOF) within its first {_JPEG_MAX_SEGMENTS} segments")
