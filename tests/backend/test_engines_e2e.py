"""The diffusion engines end to end on the CPU: wan-animate and echomimic with tiny random weights saved
in their released layouts, driven through a real backend process (submit, stream, a kill -9 and a
restart on the same store) and through `marionette render`.

wan-animate's frames are checked against diffusers' WanAnimatePipeline called directly on the same
inputs (the engine's uint8 is round(255 * x) of the pipeline's float frames); echomimic's frames
from the server against the same job from the command line, and against themselves (determinism,
what the sound and the maps change)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("ftfy")
pytest.importorskip("av")

from PIL import Image

from marionette_core.client import BackendError
from marionette_core.protocol import MessageDecoder, encode_message, recv_message

from marionette.cli import main as marionette
from marionette.engines.wan_animate.weights import load_pipeline
from marionette.images import decode_image, encode_png

import synthetic
from served import Server, assert_same_frames, collect, images, pngs, read_folder
from tiny_echomimic import write_release
from tiny_wan_animate import save_tiny_release

pytestmark = pytest.mark.usefixtures("torch_one_thread")
WIDTH, HEIGHT = 32, 48  # wan-animate: multiples of 16
STEPS = 2
PROMPT = "a person dancing"
PORTRAIT = 64  # echomimic: an 8x8 latent, the least the tiny UNet's four levels take
RATE = 16000


# --- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wan_release(tmp_path_factory):
    return save_tiny_release(tmp_path_factory.mktemp("weights") / "Wan2.2-Animate-14B-Diffusers")


@pytest.fixture(scope="module")
def wan_pipe(wan_release):
    return load_pipeline(wan_release, "cpu")


@pytest.fixture(scope="module")
def echo_release(tmp_path_factory):
    """Every variant (audio, pose, each plain and accelerated) in one pretrained_weights/ folder, as
    the release ships them. The accelerated denoisers get weights of their own (seed 1); the files a
    plain variant shares with its accelerated one are then written over by the plain one (seed 0)."""
    folder = tmp_path_factory.mktemp("pretrained_weights")
    for mode in ("audio", "pose"):
        write_release(folder, seed=1, mode=mode, accelerated=True)
        write_release(folder, seed=0, mode=mode, accelerated=False)
    return folder


# --- wan-animate ----------------------------------------------------------------------------------

class Shot:
    """A wan-animate job's inputs at WIDTH x HEIGHT: the synthetic figure waving (reference, keypoints),
    and random pose maps, 512x512 face crops, background plates and masks (grey, white = generate)."""

    def __init__(self, frames: int, seed: int):
        self.frames = frames
        self.reference_png, self.reference_pose, self.poses = synthetic.job_files(frames, width=WIDTH, height=HEIGHT)
        self.reference = decode_image(self.reference_png)
        rng = np.random.default_rng(seed)
        colours = lambda shape: rng.integers(0, 256, shape, dtype=np.uint8)  # noqa: E731
        self.pose = [colours((HEIGHT, WIDTH, 3)) for _ in range(frames)]
        self.background = [colours((HEIGHT, WIDTH, 3)) for _ in range(frames)]
        self.mask = [np.repeat((rng.random((HEIGHT, WIDTH, 1)) > 0.5).astype(np.uint8) * 255, 3, axis=2)
                     for _ in range(frames)]
        # Blocks of colour: pictures with detail whose PNGs stay small.
        self.face = [cv2.resize(colours((16, 16, 3)), (512, 512), interpolation=cv2.INTER_NEAREST)
                     for _ in range(frames)]

    def job(self, weights: Path, mode="animate", segment=5, carry=1, seed=5, send_face=False, prompt=PROMPT,
            **settings) -> tuple[dict, dict]:
        # On the CPU in float32, as the pipeline it is compared with, even where there is a GPU.
        job = {"engine": "wan-animate", "reference_pose": self.reference_pose, "poses": self.poses,
               "text": {"prompt": prompt}, "fps": 24,
               "settings": {"weights": str(weights), "mode": mode, "seed": seed, "steps": STEPS, "segment": segment,
                            "carry": carry, "device": "cpu", "dtype": "float32", **settings}}
        tracks = {"pose": pngs(self.pose)}
        if mode == "replace":
            tracks.update(background=pngs(self.background), mask=pngs(self.mask))
        if send_face:
            tracks["face_crops"] = pngs(self.face)
        return job, tracks

    def write(self, folder: Path) -> Path:
        """The shot as `marionette render` takes it: one file per frame, named by scene frame."""
        for name, track in (("maps", self.pose), ("faces", self.face), ("background", self.background),
                            ("mask", self.mask)):
            (folder / name).mkdir(parents=True)
            for index, image in enumerate(track):
                (folder / name / f"f{101 + index:04d}.png").write_bytes(encode_png(image))
        (folder / "poses").mkdir()
        for index, pose in enumerate(self.poses):
            (folder / "poses" / f"f{101 + index:04d}.json").write_text(json.dumps(pose))
        (folder / "reference.png").write_bytes(self.reference_png)
        (folder / "reference.json").write_text(json.dumps(self.reference_pose))
        return folder


def pipeline_frames(pipe, shot: Shot, face, mode="animate", segment=5, carry=1, seed=5, prompt=PROMPT):
    """diffusers' WanAnimatePipeline.__call__ on the shot, as uint8 frames: round(255 * x)."""
    pil = lambda arrays: [Image.fromarray(np.asarray(a)) for a in arrays]  # noqa: E731
    extra = {"background_video": pil(shot.background), "mask_video": pil(shot.mask)} if mode == "replace" else {}
    frames = pipe(image=Image.fromarray(shot.reference), pose_video=pil(shot.pose), face_video=pil(face),
                  prompt=prompt, negative_prompt="", height=HEIGHT, width=WIDTH, segment_frame_length=segment,
                  prev_segment_conditioning_frames=carry, num_inference_steps=STEPS, guidance_scale=1.0, mode=mode,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="np", **extra).frames[0]
    return list((frames * 255).round().astype(np.uint8))


def test_wan_animate_streams_by_segment_and_resumes_after_a_kill(server, wan_release, wan_pipe):
    """Animate mode, carry 1, segments of 5: frames 0-4, 5-8, 9-10; face crops made by the engine.

    The last segment's first unshared pose map is replaced in the store by a named pipe, so the
    engine blocks as it starts that segment, deterministically: the earlier segments' frames must
    have reached the client by then. The backend is then killed (kill -9) and a new one started on
    the same store: it takes the job up from the first missing frame."""
    shot = Shot(11, seed=1)
    job, tracks = shot.job(wan_release)
    blocking = server.client()  # a long warp job holds the queue while the pipe is put in place
    blocker = blocking.submit(*synthetic.warp_job(400))["job_id"]
    client = server.client()
    job_id = client.submit(job, shot.reference_png, tracks)["job_id"]
    pose_file = server.store / job_id / "inputs" / "tracks" / "pose" / "000010.png"
    pose_png = pose_file.read_bytes()
    pose_file.unlink()
    os.mkfifo(pose_file)
    assert server.status(job_id)["state"] == "queued"
    blocking.cancel(blocker)
    blocking.close()

    _early, order, _ = collect(client, job_id, until=9)
    assert order == list(range(9))
    # Segments 0 and 1 reached the client while the job runs and the last segment has made nothing.
    frames_folder = server.store / job_id / "frames"
    assert server.status(job_id)["state"] == "running"
    assert sorted(p.name for p in frames_folder.glob("*.png")) == [f"{i:06d}.png" for i in range(9)]
    assert sorted(p.name for p in (server.store / job_id / "state").glob("*.json")) == \
        ["wan-carry-00000.json", "wan-carry-00001.json"]
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in frames_folder.glob("*.png")}

    server.process.kill()
    pose_file.unlink()
    pose_file.write_bytes(pose_png)
    server.start()
    client = server.client()
    attached = client.attach(job_id, from_index=0)
    assert (attached["total"], attached["width"], attached["height"]) == (11, WIDTH, HEIGHT)
    frames, order, end = collect(client, job_id)
    assert end.type == "done" and order == list(range(11))
    for name, (mtime, data) in kept.items():  # frames made before the kill are untouched
        assert (frames_folder / name).stat().st_mtime_ns == mtime and (frames_folder / name).read_bytes() == data

    # Every frame message carries the face crop that drove it, as the store keeps it.
    outputs = server.store / job_id / "outputs" / "face_crops"
    assert sorted(p.name for p in outputs.iterdir()) == [f"{i:06d}.png" for i in range(11)]
    for index, attachments in frames.items():
        assert list(attachments) == ["frame.png", "face_crops.png"]
        assert attachments["face_crops.png"] == (outputs / f"{index:06d}.png").read_bytes()
        assert attachments["frame.png"] == (frames_folder / f"{index:06d}.png").read_bytes()
    crops = [decode_image(frames[i]["face_crops.png"]) for i in range(11)]
    assert all(crop.shape == (512, 512, 3) for crop in crops)
    # Frames from both backends are the pipeline's, fed the crops the engine made.
    assert_same_frames(HEIGHT, WIDTH, images(frames), pipeline_frames(wan_pipe, shot, crops))


def test_wan_animate_replace_mode_through_the_server(server, wan_release, wan_pipe):
    """Replace mode, carry 5, segments of 13 (frames 0-12, 13-20, 21-22), face crops sent by the client."""
    shot = Shot(23, seed=2)
    client = server.client()
    job, tracks = shot.job(wan_release, mode="replace", segment=13, carry=5, send_face=True)
    accepted = client.submit(job, shot.reference_png, tracks)
    assert (accepted["total"], accepted["width"], accepted["height"]) == (23, WIDTH, HEIGHT)
    frames, order, end = collect(client, accepted["job_id"])
    assert end.type == "done" and order == list(range(23))
    assert all(list(attachments) == ["frame.png"] for attachments in frames.values())  # the client's crops
    assert not (server.store / accepted["job_id"] / "outputs").exists()
    expected = pipeline_frames(wan_pipe, shot, shot.face, "replace", segment=13, carry=5)
    assert_same_frames(HEIGHT, WIDTH, images(frames), expected)


@pytest.mark.parametrize("mode,frames,segment,carry,face_maps", [
    ("animate", 23, 13, 5, False),  # face crops made from --poses, written to OUT/face_crops/
    ("replace", 11, 5, 1, True),
])
def test_wan_animate_from_the_command_line(tmp_path, wan_release, wan_pipe, mode, frames, segment, carry,
                                           face_maps):
    shot = Shot(frames, seed=3)
    files = shot.write(tmp_path / "shot")
    out = tmp_path / "out"
    argv = ["render", "--engine", "wan-animate", "--weights", str(wan_release), "--reference",
            str(files / "reference.png"), "--reference-pose", str(files / "reference.json"), "--poses",
            str(files / "poses"), "--maps", str(files / "maps"), "--prompt", PROMPT, "--seed", "5", "--steps",
            str(STEPS), "--guidance", "1", "--width", str(WIDTH), "--height", str(HEIGHT), "--device", "cpu",
            "--dtype", "float32", "--settings", json.dumps({"segment": segment, "carry": carry}), "--out", str(out)]
    if mode == "replace":
        argv += ["--mode", "replace", "--background", str(files / "background"), "--mask", str(files / "mask")]
    if face_maps:
        argv += ["--face-maps", str(files / "faces")]
    assert marionette(argv) == 0
    names = [f"f{101 + i:04d}.png" for i in range(frames)]
    assert sorted(p.name for p in out.glob("*.png")) == names
    if face_maps:
        crops = shot.face
        assert not (out / "face_crops").exists()
    else:
        assert sorted(p.name for p in (out / "face_crops").iterdir()) == names
        crops = read_folder(out / "face_crops")
    expected = pipeline_frames(wan_pipe, shot, crops, mode, segment=segment, carry=carry)
    assert_same_frames(HEIGHT, WIDTH, read_folder(out), expected)


def test_wan_animate_prompt_changes_the_frames(tmp_path, wan_release):
    shot = Shot(5, seed=4)
    files = shot.write(tmp_path / "shot")
    made = []
    for prompt in (PROMPT, "the person walking in the video"):
        out = tmp_path / f"out{len(made)}"
        assert marionette(["render", "--engine", "wan-animate", "--weights", str(wan_release), "--reference",
                           str(files / "reference.png"), "--maps", str(files / "maps"), "--face-maps",
                           str(files / "faces"), "--prompt", prompt, "--steps", str(STEPS), "--device", "cpu",
                           "--out", str(out)]) == 0
        made.append(np.stack(read_folder(out)))
    assert made[0].shape == (5, HEIGHT, WIDTH, 3)
    assert (made[0] != made[1]).mean() > 0.05


def test_wan_animate_bad_jobs_are_refused_by_name_and_nothing_is_stored(server, wan_release, tmp_path):
    shot = Shot(3, seed=5)
    no_index = tmp_path / "no-index"
    shutil.copytree(wan_release, no_index)
    (no_index / "model_index.json").unlink()
    other = tmp_path / "other-pipeline"
    shutil.copytree(wan_release, other)
    (other / "model_index.json").write_text(json.dumps({**json.loads((wan_release / "model_index.json").read_text()),
                                                        "_class_name": "WanPipeline"}))
    job, tracks = shot.job(wan_release)

    def settings(**changes):
        return {**job, "settings": {**job["settings"], **changes}}
    cases = [
        ({**job, "width": 40}, tracks, "limit", "multiples of 16, not 40x48"),
        (job, {}, "bad_request", "needs the 'pose' track"),
        (job, {**tracks, "depth": tracks["pose"]}, "bad_request", "takes no 'depth' images"),
        (settings(weights=str(no_index)), tracks, "bad_request", "no model_index.json"),
        (settings(weights=str(other)), tracks, "bad_request", "'WanPipeline'"),
        (settings(weights=str(tmp_path / "nowhere")), tracks, "bad_request", "does not exist"),
        (settings(mode="replace"), tracks, "bad_request", "replace mode needs a background and mask track"),
        (settings(mode="replace"), {**tracks, "mask": pngs(shot.mask)}, "bad_request", "needs a background track"),
        (settings(strength=0.5), tracks, "bad_request", "has no setting 'strength'"),
        (settings(steps="two"), tracks, "bad_request", "setting 'steps' must be of type int"),
        (settings(carry=3), tracks, "bad_request", "setting 'carry' must be one of 1, 5"),
        (settings(segment=9, carry=5), tracks, "bad_request", "too short for carry 5"),
        ({**job, "text": {"style": "oil"}}, tracks, "bad_request", "takes no text style"),
    ]
    client = server.client()
    stored = server.stored_jobs()
    for bad_job, bad_tracks, code, words in cases:
        with pytest.raises(BackendError) as refused:
            client.submit(bad_job, shot.reference_png, bad_tracks)
        assert refused.value.code == code and words in str(refused.value), (code, str(refused.value))
    client.ping()  # the connection still serves
    assert server.stored_jobs() == stored, "a refused job was stored"


def test_an_old_client_gets_a_version_error_and_the_server_carries_on(server):
    with socket.create_connection(("127.0.0.1", server.process.port), timeout=30) as sock:
        for buffer in encode_message({"type": "hello", "version": 1, "token": server.process.token,
                                      "client": "marionette"}):
            sock.sendall(buffer)
        decoder = MessageDecoder()
        reply = recv_message(sock, decoder)
        assert reply.type == "error" and reply.header["code"] == "version"
        assert "protocol 2 and the client 1" in reply.header["message"]
        assert recv_message(sock, decoder) is None  # and the connection is closed
    client = server.client()
    client.ping()
    engines = {engine["name"]: engine for engine in client.capabilities["engines"]}
    assert {"wan-animate", "echomimic"} <= set(engines)
    assert [(i["name"], i["kind"], i["style"], i["required"]) for i in engines["wan-animate"]["inputs"]] == [
        ("pose", "images", "wan", True), ("face_crops", "images", "face-crop", False),
        ("background", "images", "background", False), ("mask", "images", "rig-mask", False),
        ("prompt", "text", None, False), ("negative_prompt", "text", None, False)]
    assert engines["echomimic"]["settings"]["mode"]["choices"] == ["audio", "pose"]


# --- echomimic ------------------------------------------------------------------------------------

def write_wav(path: Path, seconds: float, hz: float | None) -> Path:
    """16-bit mono WAV at 16 kHz: a warbling tone, or silence (hz None)."""
    t = np.arange(int(seconds * RATE)) / RATE
    samples = np.zeros_like(t) if hz is None else 0.3 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(6 * np.pi * t))
    with wave.open(str(path), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(RATE)
        sound.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


FACE_BOX = (12, 10, 52, 50)  # x0, y0, x1, y1 of the portrait's face, pixels


def portrait_files(folder: Path, landmarks=True) -> tuple[bytes, dict]:
    """A textured 64x64 portrait and its reference pose: the 68 face points spanning FACE_BOX."""
    folder.mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:PORTRAIT, 0:PORTRAIT]
    image = np.stack([128 + 60 * np.sin(xs / 5.0), 128 + 60 * np.cos(ys / 7.0), 128 + 40 * np.sin((xs + ys) / 9.0)],
                     axis=2).astype(np.uint8)
    reference_png = encode_png(image)
    points = np.zeros((68, 3))
    angle = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    x0, y0, x1, y1 = FACE_BOX
    points[:, 0] = (x0 + x1) / 2 + (x1 - x0) / 2 * np.cos(angle)
    points[:, 1] = (y0 + y1) / 2 + (y1 - y0) / 2 * np.sin(angle)
    points[:, 2] = 1
    person = {"pose_keypoints_2d": [0.0] * 54}
    if landmarks:
        person["face_keypoints_2d"] = points.reshape(-1).tolist()
    reference_pose = {"version": 1.3, "people": [person], "canvas_width": PORTRAIT, "canvas_height": PORTRAIT}
    (folder / "reference.png").write_bytes(reference_png)
    (folder / "reference.json").write_text(json.dumps(reference_pose))
    return reference_png, reference_pose


def echo_job(weights: Path, reference_pose: dict, frames: int, fps=24, **settings) -> dict:
    return {"engine": "echomimic", "reference_pose": reference_pose, "poses": [{"people": []}] * frames, "fps": fps,
            "settings": {"weights": str(weights), "seed": 3, "steps": STEPS, "device": "cpu", **settings}}


def face_maps(frames: int, seed: int) -> list[np.ndarray]:
    """Stand-ins for echomimic-face landmark maps: coloured squares on black."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(frames):
        image = np.zeros((PORTRAIT, PORTRAIT, 3), np.uint8)
        for _square in range(6):
            x, y = rng.integers(8, 52, 2)
            image[y:y + 5, x:x + 5] = rng.integers(60, 256, 3)
        maps.append(image)
    return maps


def echo_cli(weights: Path, folder: Path, out: Path, *extra: str) -> list[np.ndarray]:
    assert marionette(["render", "--engine", "echomimic", "--weights", str(weights), "--reference",
                       str(folder / "reference.png"), "--seed", "3", "--device", "cpu", "--out", str(out), *extra]) == 0
    return read_folder(out)


def run_job(server: Server, job, reference_png, tracks=None, audio=None):
    """Submit a job and wait for its end: (job id, frames by index, the order they came in)."""
    client = server.client()
    accepted = client.submit(job, reference_png, tracks, audio)
    frames, order, end = collect(client, accepted["job_id"])
    assert end.type == "done"
    client.close()
    return accepted["job_id"], frames, order


def test_echomimic_audio_mode_through_the_server_and_the_command_line(server, echo_release, tmp_path):
    reference_png, reference_pose = portrait_files(tmp_path / "portrait")
    tone = write_wav(tmp_path / "tone.wav", 0.5, 440.0).read_bytes()
    silence = write_wav(tmp_path / "silence.wav", 0.5, None).read_bytes()
    job = echo_job(echo_release, reference_pose, 12)  # 0.5 s at 24 fps

    job_id, frames, order = run_job(server, job, reference_png, audio=tone)
    assert order == list(range(12))  # streamed as messages, in order
    assert all(list(f) == ["frame.png"] for f in frames.values())
    spoken = images(frames)
    assert all(image.shape == (PORTRAIT, PORTRAIT, 3) for image in spoken)
    assert (server.store / job_id / "inputs" / "audio").read_bytes() == tone
    _, again, _ = run_job(server, job, reference_png, audio=tone)
    assert all(np.array_equal(a, b) for a, b in zip(spoken, images(again)))  # same job, same frames
    _, quiet, _ = run_job(server, job, reference_png, audio=silence)
    assert all(not np.array_equal(a, b) for a, b in zip(spoken, images(quiet)))  # the sound drives every frame

    # The command line: 12 frames from the sound's length at 24 fps, the face from the reference pose.
    cli = echo_cli(echo_release, tmp_path / "portrait", tmp_path / "out", "--audio", str(tmp_path / "tone.wav"),
                   "--reference-pose", str(tmp_path / "portrait" / "reference.json"), "--steps", str(STEPS))
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [f"{i:06d}.png" for i in range(12)]
    assert all(np.array_equal(a, b) for a, b in zip(cli, spoken)) and len(cli) == 12


def test_echomimic_pose_mode_follows_the_maps(server, echo_release, tmp_path):
    reference_png, reference_pose = portrait_files(tmp_path / "portrait", landmarks=False)
    wav = write_wav(tmp_path / "tone.wav", 0.5, 300.0)
    maps = face_maps(8, seed=1)
    moved = [m.copy() for m in maps]
    moved[3] = np.roll(moved[3], 9, axis=1)  # one frame's landmarks move
    job = echo_job(echo_release, reference_pose, 8, mode="pose")
    _, frames, order = run_job(server, job, reference_png, {"face": pngs(maps)}, wav.read_bytes())
    _, other, _ = run_job(server, job, reference_png, {"face": pngs(moved)}, wav.read_bytes())
    assert order == list(range(8))
    posed, moved_frames = images(frames), images(other)
    assert not np.array_equal(posed[3], moved_frames[3])

    folder = tmp_path / "maps"
    folder.mkdir()
    for index, image in enumerate(maps):
        (folder / f"{index:04d}.png").write_bytes(encode_png(image))
    cli = echo_cli(echo_release, tmp_path / "portrait", tmp_path / "out", "--audio", str(wav), "--mode", "pose",
                   "--maps", str(folder), "--steps", str(STEPS))
    assert len(cli) == 8 and all(np.array_equal(a, b) for a, b in zip(cli, posed))  # 8 maps: 8 frames


def test_echomimic_accelerated_face_mask_and_frame_rate(server, echo_release, tmp_path):
    """--accelerated (6 steps, no guidance), --face-mask (its white box), --fps and --frames from the
    command line give the frames of the same job sent to the server."""
    reference_png, reference_pose = portrait_files(tmp_path / "portrait", landmarks=False)
    wav = write_wav(tmp_path / "tone.wav", 0.4, 520.0)
    mask = np.zeros((32, 32), np.uint8)  # half the portrait's size: the box scales to output pixels
    x0, y0, x1, y1 = FACE_BOX
    mask[y0 // 2:y1 // 2, x0 // 2:x1 // 2] = 255
    (tmp_path / "mask.png").write_bytes(encode_png(np.repeat(mask[..., None], 3, axis=2)))
    job = echo_job(echo_release, reference_pose, 6, fps=30, accelerated=True, face_box=",".join(map(str, FACE_BOX)))
    del job["settings"]["steps"]  # the accelerated release's own 6 steps
    _, frames, _ = run_job(server, job, reference_png, audio=wav.read_bytes())
    cli = echo_cli(echo_release, tmp_path / "portrait", tmp_path / "out", "--audio", str(wav), "--accelerated",
                   "--face-mask", str(tmp_path / "mask.png"), "--fps", "30", "--frames", "6")
    served = images(frames)
    assert len(cli) == len(served) == 6 and all(np.array_equal(a, b) for a, b in zip(cli, served))
    plain = echo_cli(echo_release, tmp_path / "portrait", tmp_path / "plain", "--audio", str(wav), "--face-mask",
                     str(tmp_path / "mask.png"), "--fps", "30", "--frames", "6", "--steps", "6", "--guidance", "1")
    assert all(not np.array_equal(a, b) for a, b in zip(plain, cli))  # the accelerated weights were used


def test_echomimic_resumes_on_the_same_store(server, echo_release, tmp_path):
    """A backend killed mid-job leaves the frames it made and the job 'running'; the next one on the
    same store makes the rest, equal to an uninterrupted run, and leaves the others untouched. The
    engine writes its frames in one burst after its last step, so that store is made here: a finished
    job's later frames removed and its state set back to 'running' after a kill -9."""
    reference_png, reference_pose = portrait_files(tmp_path / "portrait")
    wav = write_wav(tmp_path / "tone.wav", 0.5, 440.0).read_bytes()
    job_id, frames, _ = run_job(server, echo_job(echo_release, reference_pose, 12), reference_png, audio=wav)
    server.process.kill()
    folder = server.store / job_id / "frames"
    for index in range(5, 12):
        (folder / f"{index:06d}.png").unlink()
    (server.store / job_id / "status.json").write_text(json.dumps({"state": "running", "updated": 0}))
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    server.start()
    client = server.client()
    client.attach(job_id, from_index=0)
    resumed, order, end = collect(client, job_id)
    assert end.type == "done" and order == list(range(12))
    assert all(resumed[i]["frame.png"] == frames[i]["frame.png"] for i in range(12))
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png") if p.name in kept} == kept


def test_echomimic_bad_jobs_are_refused_by_name(server, echo_release, tmp_path):
    reference_png, reference_pose = portrait_files(tmp_path / "portrait")
    _, faceless_pose = portrait_files(tmp_path / "faceless", landmarks=False)
    wav = write_wav(tmp_path / "tone.wav", 0.3, 440.0)
    partial = tmp_path / "partial"
    shutil.copytree(echo_release, partial)
    (partial / "face_locator.pth").unlink()
    job = echo_job(echo_release, reference_pose, 4)
    cases = [
        ({**job, "settings": {**job["settings"], "weights": str(partial)}}, wav.read_bytes(), "face_locator.pth"),
        (job, None, "needs the sound of the frame range"),
        ({**job, "reference_pose": faceless_pose}, wav.read_bytes(), "audio mode needs the face's place"),
        ({**job, "settings": {**job["settings"], "face_box": "10,10"}}, wav.read_bytes(), "face_box must be"),
        ({**job, "settings": {**job["settings"], "mode": "pose"}}, wav.read_bytes(), "echomimic-face landmark maps"),
        ({**job, "text": {"prompt": "sing"}}, wav.read_bytes(), "takes no text prompt"),
    ]
    client = server.client()
    stored = server.stored_jobs()
    for bad_job, audio, words in cases:
        with pytest.raises(BackendError) as refused:
            client.submit(bad_job, reference_png, None, audio)
        assert refused.value.code == "bad_request" and words in str(refused.value), str(refused.value)
    client.ping()
    assert server.stored_jobs() == stored, "a refused job was stored"


def test_echomimic_command_line_errors_name_the_cause(echo_release, tmp_path, capsys):
    portrait_files(tmp_path / "portrait", landmarks=False)
    wav = write_wav(tmp_path / "tone.wav", 0.3, 440.0)
    base = ["render", "--engine", "echomimic", "--weights", str(echo_release), "--reference",
            str(tmp_path / "portrait" / "reference.png"), "--out", str(tmp_path / "out")]
    for extra, words in [
        ([], "needs the sound of the frames: give --audio"),
        (["--audio", str(wav)], "--face-box on the command line"),
        (["--audio", str(wav), "--prompt", "sing"], "takes no prompt"),
        (["--audio", str(wav), "--face-box", "1,2,3,4", "--face-mask", str(wav)], "not both"),
        (["--audio", str(tmp_path / "missing.wav")], "no audio file at"),
    ]:
        assert marionette(base + extra) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written
