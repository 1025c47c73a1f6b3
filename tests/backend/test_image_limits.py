"""Image limits: every image is checked from its header before anything decodes it.

A decompression bomb (2.5 MiB of PNG declaring 30000x30000 pixels, 2.7 GB once decoded) sent on
any image track is refused within a second, costs the server no memory and stores nothing; formats
other than PNG and JPEG are refused by name; accepted images decode a few at a time; the client
checks each frame it receives against the job's size.
"""

import math
import re
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marionette_core.client import BackendClient, BackendError
from marionette_core.image_header import (DEFAULT_MAX_SIDE, ImageHeaderError, ImageTooLargeError, check_image_size,
                                          image_size)
from marionette_core.png import encode_png
from marionette_core.protocol import send_message

from marionette.images import ImageError, ImageLimitError, ImageTrack, decode_image
from marionette.job_inputs import build_inputs

import synthetic

BOMB_SIDE = 30000
MIB = 1024  # in KiB, the unit of /proc/<pid>/status


# --- the files ---------------------------------------------------------------------------------

def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def zeros_zlib(count: int, chunk: int) -> bytes:
    """A zlib stream of `count` zero bytes (a multiple of `chunk`) that never holds them all: one chunk
    deflated and closed with a full flush, after which the compressor forgets everything before, so
    every chunk compresses to the same bytes; the block is repeated."""
    assert count % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = compressor.flush(zlib.Z_FINISH)  # an empty last block
    adler = (count % 65521) << 16 | 1  # Adler-32 of zeros: the sum stays 1, the sum of sums is count
    return b"\x78\xda" + block * (count // chunk) + final + struct.pack(">I", adler)


def bomb_png(width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> bytes:
    """A valid 8-bit RGB PNG of black pixels: 30000x30000 (2.7 GB decoded) takes 2.5 MiB."""
    row = 1 + 3 * width  # filter byte, then RGB
    rows_per_chunk = math.gcd(height, 100)
    return b"".join((b"\x89PNG\r\n\x1a\n", png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
                     png_chunk(b"IDAT", zeros_zlib(row * height, row * rows_per_chunk)), png_chunk(b"IEND", b"")))


def encode(extension: str, image: np.ndarray, params=()) -> bytes:
    ok, data = cv2.imencode(extension, image, list(params))
    assert ok
    return data.tobytes()


def jpeg_segments(data: bytes):
    """(offset of the marker, marker, length) of a cv2-written JPEG's segments up to its scan."""
    pos = 2
    while True:
        marker, length = data[pos + 1], struct.unpack_from(">H", data, pos + 2)[0]
        yield pos, marker, length
        if marker == 0xDA:
            return
        pos += 2 + length


def with_jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF) declaring another size."""
    for pos, marker, _length in jpeg_segments(data):
        if 0xC0 <= marker <= 0xC2:
            return data[:pos + 5] + struct.pack(">HH", height, width) + data[pos + 9:]
    raise AssertionError("no SOF")


@pytest.fixture(scope="module")
def bomb():
    return bomb_png()


@pytest.fixture(scope="module")
def jpeg_bomb():
    return with_jpeg_size(encode(".jpg", np.zeros((16, 16, 3), np.uint8)), BOMB_SIDE, BOMB_SIDE)


def test_the_bomb_is_a_valid_png_of_a_few_mib(bomb):
    small = bomb_png(300, 200)
    assert np.array_equal(cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_UNCHANGED),
                          np.zeros((200, 300, 3), np.uint8))
    assert len(bomb) < 4 * 1024 * 1024
    assert image_size(bomb) == ("PNG", BOMB_SIDE, BOMB_SIDE)


# --- the header reader -------------------------------------------------------------------------

SIZES = [(1, 1), (7, 3), (3, 7), (640, 480), (4096, 17), (17, 4096)]
KINDS = {
    "png rgb": lambda w, h: encode(".png", np.full((h, w, 3), 90, np.uint8)),
    "png rgba": lambda w, h: encode(".png", np.full((h, w, 4), 90, np.uint8)),
    "png grey": lambda w, h: encode(".png", np.full((h, w), 90, np.uint8)),
    "png 16-bit": lambda w, h: encode(".png", np.full((h, w, 3), 9000, np.uint16)),
    "png (extension's encoder)": lambda w, h: encode_png(np.full((h, w, 3), 90, np.uint8)),
    "jpeg": lambda w, h: encode(".jpg", np.full((h, w, 3), 90, np.uint8)),
    "jpeg grey": lambda w, h: encode(".jpg", np.full((h, w), 90, np.uint8)),
    "jpeg progressive": lambda w, h: encode(".jpg", np.full((h, w, 3), 90, np.uint8),
                                            (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("width,height", SIZES)
def test_sizes_of_files_written_by_opencv(kind, width, height):
    data = KINDS[kind](width, height)
    assert image_size(data) == (kind.split()[0].upper(), width, height)
    assert check_image_size(data, "image") == image_size(data)


def test_jpeg_frame_header_after_other_segments_and_fill_bytes():
    data = encode(".jpg", np.full((40, 70, 3), 90, np.uint8))
    extra = (b"\xff\xe1" + struct.pack(">H", 2 + 5000) + bytes(5000)  # an APP1 (EXIF-sized) segment
             + b"\xff\xfe" + struct.pack(">H", 2 + 7) + b"comment"  # a COM segment
             + b"\xff\xff\xff")  # fill bytes before the next marker
    assert image_size(data[:2] + extra + data[2:]) == ("JPEG", 70, 40)


def test_hostile_jpeg_headers_are_refused_where_the_walk_stops():
    """The walk is bounded by what it examines, whatever the file's length: at most JPEG_MAX_FILL
    fill bytes before a marker and _JPEG_MAX_SEGMENTS segments (each skipped by its length). A run of
    32 MiB of fill bytes is refused where the allowed run ends, exactly as a run one byte too long."""
    from marionette_core.image_header import JPEG_MAX_FILL

    too_long = f"a run of more than {JPEG_MAX_FILL} fill bytes at byte 2"
    cases = {
        too_long: [b"\xff\xd8" + b"\xff" * (32 << 20), b"\xff\xd8" + b"\xff" * (JPEG_MAX_FILL + 2) + b"\xd9"],
        "no frame header (SOF) within its first 1024 segments": [b"\xff\xd8" + b"\xff\xfe\x00\x02" * (1 << 20)],
        "segment of invalid length 1": [b"\xff\xd8\xff\xe0\x00\x01"],
        "no frame header (SOF) before its image data": [b"\xff\xd8\xff\xda\x00\x08" + bytes(6)],
        "ends before its frame header": [b"\xff\xd8" + b"\xff" * 40],
    }
    for words, hostile in cases.items():
        for data in hostile:
            with pytest.raises(ImageHeaderError, match=re.escape(words)):
                image_size(data)
    # The longest allowed run is walked through to its marker.
    allowed = KINDS["jpeg"](64, 48)
    padded = allowed[:2] + b"\xff" * JPEG_MAX_FILL + allowed[2:]
    assert image_size(padded) == ("JPEG", 64, 48)


@pytest.mark.parametrize("kind", ["png rgb", "jpeg"])
def test_every_truncated_header_is_refused(kind):
    data = KINDS[kind](64, 48)
    # PNG: signature, IHDR and its CRC; JPEG: up to the SOF's size and component count.
    header_end = 33 if kind == "png rgb" else next(pos + 10 for pos, marker, _ in jpeg_segments(data) if marker == 0xC0)
    for end in range(header_end):
        with pytest.raises(ImageHeaderError):
            image_size(data[:end])
    assert image_size(data[:header_end]) == (kind.split()[0].upper(), 64, 48)


def test_damaged_png_headers_are_refused():
    data = KINDS["png rgb"](64, 48)
    cases = {
        "CRC mismatch": data[:19] + b"\x41" + data[20:],  # the width changed, its CRC did not
        "does not start with its IHDR": data[:12] + b"IDAT" + data[16:],
        "signature is damaged": data[:4] + data[5:],  # a text-mode transfer turned CR LF into LF
        "invalid size of 0x48": data[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 48, 8, 2, 0, 0, 0))
        + data[33:],
        "bit depth 3": data[:8] + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 48, 3, 2, 0, 0, 0)) + data[33:],
    }
    for words, damaged in cases.items():
        with pytest.raises(ImageHeaderError) as error:
            image_size(damaged)
        assert words in str(error.value), (words, str(error.value))


@pytest.mark.parametrize("extension,name", [(".bmp", "BMP"), (".tiff", "TIFF"), (".webp", "WebP"),
                                            (".ppm", "Netpbm"), (".pgm", "Netpbm"), (".pfm", "Netpbm")])
def test_other_formats_are_refused_by_name(extension, name):
    shape = (8, 8) if extension == ".pgm" else (8, 8, 3)
    image = np.full(shape, 90, np.float32 if extension == ".pfm" else np.uint8)
    data = encode(extension, image)
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV would take it
    with pytest.raises(ImageHeaderError) as error:
        check_image_size(data, "reference image")
    assert str(error.value) == (f"the reference image is not a readable image: it is a {name} file; "
                                f"only PNG and JPEG are accepted")


@given(st.binary(max_size=400), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"]))
def test_garbage_gives_a_size_or_a_header_error(tail, head):
    try:
        size = image_size(head + tail)
    except ImageHeaderError:
        return
    assert size.width > 0 and size.height > 0


def test_limits_name_the_size_and_the_limit(bomb, jpeg_bomb):
    for data, kind in ((bomb, "PNG"), (jpeg_bomb, "JPEG")):
        with pytest.raises(ImageTooLargeError) as error:
            check_image_size(data, "reference image")
        assert str(error.value).startswith(f"the reference image is {BOMB_SIDE}x{BOMB_SIDE} pixels, over the "
                                           f"limit of {DEFAULT_MAX_SIDE} pixels per side"), kind
    wide = KINDS["png rgb"](4000, 30)
    assert check_image_size(wide, "map", max_side=4000).width == 4000
    with pytest.raises(ImageTooLargeError) as error:
        check_image_size(wide, "map", max_side=4096, max_pixels=100_000)
    assert "4000x30 pixels (120000), over the limit of 100000 pixels" in str(error.value)


# --- decoding in the backend -------------------------------------------------------------------

def test_decode_image_refuses_the_bomb_without_decoding_it(bomb, jpeg_bomb):
    for data in (bomb, jpeg_bomb):  # refused from the header: a decode would need 2.5 GiB
        with pytest.raises(ImageLimitError) as error:
            decode_image(data, "reference image")
        assert f"{BOMB_SIDE}x{BOMB_SIDE}" in str(error.value)
    with pytest.raises(ImageError) as error:
        decode_image(encode(".bmp", np.zeros((4, 4, 3), np.uint8)), "reference image")
    assert "BMP" in str(error.value)
    assert decode_image(KINDS["png 16-bit"](5, 3)).shape == (3, 5, 3)


def test_image_tracks_decode_one_image_at_a_time_on_access(tmp_path, bomb):
    maps = [KINDS["png rgb"](64, 48), KINDS["jpeg"](32, 24), KINDS["png rgba"](128, 96)]
    track = ImageTrack(maps, 40, 30, "control map")
    assert len(track) == 3 and [m.shape for m in track] == [(30, 40, 3)] * 3
    assert track[-1].dtype == np.uint8 and len(track[1:]) == 2 and track[1:][0].shape == (30, 40, 3)
    with pytest.raises(IndexError):
        track[3]
    # An image is only read when an engine reads it: a broken one fails that read, naming it.
    broken = ImageTrack(maps[:2] + [maps[2][:200]], 40, 30, "control map")
    assert broken[0].shape == (30, 40, 3)
    with pytest.raises(ImageError, match="control map 2 is not a readable image"):
        broken[2]
    with pytest.raises(ImageLimitError, match="face crop 1 is 30000x30000"):
        ImageTrack([maps[0], bomb], 40, 30, "face crop")[1:][0]
    # From files too, as a job loaded from the store keeps them.
    paths = []
    for index, data in enumerate(maps):
        paths.append(tmp_path / f"{index:06d}.png")
        paths[-1].write_bytes(data)
    assert [m.shape for m in ImageTrack(paths, 40, 30)] == [(30, 40, 3)] * 3


def test_build_inputs_checks_every_header_before_decoding(bomb):
    reference_png, reference_pose, poses = synthetic.job_files(3)
    good = KINDS["png rgb"](64, 48)
    with pytest.raises(ImageLimitError, match="'pose' image 1 is 30000x30000"):
        build_inputs(reference_png, reference_pose, poses, {"pose": [good, bomb, good]}, 40, 30, {})
    with pytest.raises(ImageLimitError, match="reference image is 30000x30000"):
        build_inputs(bomb, reference_pose, poses, {}, None, None, {})


# --- the server ----------------------------------------------------------------------------------

def client_for(backend) -> BackendClient:
    client = BackendClient("127.0.0.1", backend.port, backend.token, timeout=60)
    client.connect()
    return client


def submit_raw(client: BackendClient, job: dict, attachments: list[tuple[str, bytes]]) -> BackendError | None:
    """Submit with any attachments; the error it raised (or None)."""
    try:
        client.send({"type": "submit", "job": job}, attachments)
        client.expect("accepted")
    except BackendError as raised:
        return raised
    return None


def stored_jobs(backend) -> list[str]:
    return [p.name for p in backend.store.iterdir()]


def run_a_good_job(client: BackendClient) -> None:
    job, reference = synthetic.warp_job(3)
    accepted = client.submit(job, reference)
    while True:
        message = client.receive()
        if message.type == "done":
            assert message.header["job_id"] == accepted["job_id"]
            return


def test_a_bomb_on_any_image_track_is_refused_from_its_header(backend, bomb, jpeg_bomb):
    client = client_for(backend)
    job, reference = synthetic.warp_job(3)
    good_map = KINDS["png rgb"](256, 384)
    cases = {
        "reference": [("reference.png", bomb)],
        "control map": [("reference.png", reference), ("track/pose/000000.png", good_map),
                        ("track/pose/000001.png", bomb), ("track/pose/000002.png", good_map)],
        "face crop": [("reference.png", reference), ("track/face_crops/000000.png", bomb)],
        "background": [("reference.png", reference), ("track/background/000000.png", bomb)],
        "mask": [("reference.png", reference), ("track/mask/000000.png", good_map), ("track/mask/000001.png", bomb)],
        "JPEG reference": [("reference.png", jpeg_bomb)],
        "JPEG background": [("reference.png", reference), ("track/background/000000.png", jpeg_bomb)],
    }
    client.ping()
    baseline = backend.rss_kib()
    figures = {}
    for track, attachments in cases.items():
        error = submit_raw(client, job, attachments)
        growth = backend.rss_kib() - baseline
        figures[track] = growth
        assert error is not None and error.code == "limit", (track, error)
        assert f"{BOMB_SIDE}x{BOMB_SIDE} pixels" in str(error) and f"limit of {DEFAULT_MAX_SIDE}" in str(error), \
            str(error)
        assert growth < 64 * MIB, (track, f"server memory grew by {growth} KiB")
        assert stored_jobs(backend) == [], track
    print("RSS growth in KiB:", figures)
    assert backend.alive()
    run_a_good_job(client)  # the same connection still serves


def test_unreadable_and_other_format_images_are_refused_before_decoding(backend):
    client = client_for(backend)
    job, reference = synthetic.warp_job(2)
    good_map = KINDS["png rgb"](256, 384)
    bmp_bomb = b"BM" + bytes(16) + struct.pack("<ii", BOMB_SIDE, BOMB_SIDE) + bytes(28)  # BITMAPINFOHEADER sizes
    cases = [
        ([("reference.png", reference[:30])],
         "reference image is not a readable image: the PNG ends inside its header"),
        ([("reference.png", encode(".bmp", np.zeros((8, 8, 3), np.uint8)))], "it is a BMP file"),
        ([("reference.png", reference), ("track/pose/000000.png", good_map),
          ("track/pose/000001.png", encode(".tiff", np.zeros((8, 8, 3), np.uint8)))],
         "'pose' image 1 is not a readable image: it is a TIFF file"),
        ([("reference.png", reference), ("track/background/000000.png", bmp_bomb)],
         "'background' image 0 is not a readable image: it is a BMP file; only PNG and JPEG"),
        ([("reference.png", reference), ("track/mask/000000.png", KINDS["jpeg"](8, 8)[:40])],
         "JPEG ends before its frame"),
    ]
    for attachments, words in cases:
        error = submit_raw(client, job, attachments)
        assert error is not None and error.code == "bad_request" and words in str(error), (words, error)
    assert stored_jobs(backend) == []
    run_a_good_job(client)


def test_accepted_and_attached_say_the_frame_size(backend):
    client = client_for(backend)
    job, reference = synthetic.warp_job(2)
    accepted = client.submit(job, reference)
    assert (accepted["width"], accepted["height"]) == (256, 384)  # the reference's size
    assert client.frame_sizes[accepted["job_id"]] == (256, 384)
    other = client_for(backend)
    attached = other.attach(accepted["job_id"])
    assert (attached["width"], attached["height"]) == (256, 384)
    resized = client_for(backend).submit({**job, "width": 128, "height": 192}, reference)
    assert (resized["width"], resized["height"]) == (128, 192)


def test_concurrent_large_submits_decode_a_few_at_a_time(backend):
    """Eight submits of a 4096x4096 RGBA reference at once: decoding each holds about 128 MiB
    (OpenCV's array and its RGB copy); the server decodes two at a time (measured: 260 MiB at the
    peak; 650 MiB with six at a time, as many as asyncio's threads on two cores)."""
    large = encode(".png", np.full((4096, 4096, 4), 90, np.uint8))
    job, _reference = synthetic.warp_job(2)
    job = {**job, "width": 256, "height": 384}
    clients = [client_for(backend) for _ in range(8)]
    for client in clients:
        client.ping()
    baseline = backend.peak_rss_kib()
    with ThreadPoolExecutor(len(clients)) as pool:
        accepted = list(pool.map(lambda client: client.submit(job, large), clients))
    assert len({a["job_id"] for a in accepted}) == 8
    growth = backend.peak_rss_kib() - baseline
    print(f"peak RSS growth for 8 concurrent 4096x4096 submits: {growth // MIB} MiB")
    assert growth < 400 * MIB, f"peak server memory grew by {growth // MIB} MiB"


# --- frames the client receives ------------------------------------------------------------------

def test_the_client_refuses_frames_that_are_not_the_jobs_size(bomb):
    server_end, client_end = socket.socketpair()
    client = BackendClient("unused", 0, "token", timeout=5)
    client.sock = client_end
    client_end.settimeout(5)
    client.capabilities = {"limits": {"max_side": 4096, "max_pixels": 4096 * 4096}}
    client.frame_sizes["a" * 32] = (64, 48)

    def frame(data: bytes, job_id: str = "a" * 32, extra=()):
        sender = threading.Thread(target=send_message, args=(server_end, {
            "type": "frame", "job_id": job_id, "index": 0, "frame": 7, "total": 1},
            [("frame.png", data), *extra]))
        sender.start()  # a frame larger than the socket buffer needs the reader going
        try:
            return client.receive()
        finally:
            sender.join()

    good = KINDS["png rgb"](64, 48)
    assert frame(good).attachments == [good]
    refusals = [
        (bomb, "as a 30000x30000 PNG, but the job's frames are 64x48 PNGs"),
        (KINDS["png rgb"](48, 64), "as a 48x64 PNG, but the job's frames are 64x48 PNGs"),
        (KINDS["jpeg"](64, 48), "as a 64x48 JPEG"),
        (good[:20], "not a readable image (the PNG ends inside its header"),
    ]
    for data, words in refusals:
        with pytest.raises(BackendError) as error:
            frame(data)
        assert error.value.code == "bad_image" and "frame 7 of job aaaaaaaa" in str(error.value), str(error.value)
        assert words in str(error.value) and "the frame was refused" in str(error.value), str(error.value)
    # Other images that come with a frame are held to the limits.
    crop = KINDS["png rgb"](512, 512)
    assert len(frame(good, extra=[("face_crop.png", crop)]).attachments) == 2
    with pytest.raises(BackendError, match="image 'face_crop.png' of frame 7 of job aaaaaaaa is 30000x30000"):
        frame(good, extra=[("face_crop.png", bomb)])
    # A job whose size the client was not told: the backend's announced limits bound its frames.
    assert frame(KINDS["png rgb"](300, 20), job_id="b" * 32).attachments[0][:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BackendError, match="PNGs of at most 4096 pixels per side"):
        frame(bomb, job_id="b" * 32)
    server_end.close()
    client.close()
