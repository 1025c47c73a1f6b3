"""Wan-Animate's segment loop, streamed: each segment's frames as soon as that segment is decoded.

diffusers' WanAnimatePipeline.__call__ generates a shot in segments and returns the frames at the
end. This loop is built from the same pipeline's own parts (encode_prompt, encode_image,
prepare_reference_image_latents, prepare_latents, prepare_pose_latents,
prepare_prev_segment_cond_latents, pad_video_frames, its video processors, transformer, scheduler,
VAE), in the same order with the same arguments, so its frames are the pipeline's frames:

- Segments: the segment length L is rounded as the pipeline rounds it (L % 4 != 1 -> L // 4 * 4 + 1);
  segment s covers input frames s*(L - carry) .. s*(L - carry) + L - 1; the shot is padded to a whole
  number of segments by mirroring its frames (pad_video_frames); segment 0 yields its L frames, a
  later one its last L - carry (its first `carry` frames re-make the previous segment's last ones,
  which condition it); frames past the shot are dropped.
- Random draws: the only ones are the initial noise of each segment, one prepare_latents draw of
  shape (1, 16, (L - 1) / 4 + 2, H / 8, W / 8) from a CPU generator seeded with the seed. Every VAE
  encode (reference, pose, conditioning frames) takes the latent mode ("argmax"), the UniPC
  scheduler draws nothing.
- Output: the pipeline's "np" frames are (decoded / 2 + 0.5).clamp(0, 1) as float32; the uint8
  frames here are those floats * 255, rounded half to even, exactly as the pipeline's own "pil"
  output makes them (VaeImageProcessor.numpy_to_pil). So for the same inputs and seed, frame i here
  equals round(255 * pipeline(...).frames[0][i]).

Resume: after each segment the decoded frames that condition the next one (the last `carry`
frames, float32, as the VAE returned them) are saved to `state_dir`. A job that stored frames
0..k-1 restarts at segment s holding frame k from the state of segment s - 1, after drawing (and
discarding) the noise of segments 0..s-1 so that the generator's stream is where an uninterrupted
run has it; its frames equal the uninterrupted run's. Without a usable state it recomputes from the
nearest earlier state (or from the start) and skips the frames before k.

Two differences where the pipeline cannot run at all: a shot of at most `carry` frames (the
pipeline plans zero segments) is planned as carry + 1 frames and trimmed; a one-frame shot is
repeated rather than mirrored. A segment length of at most 2 * carry is refused up front (the
pipeline fails on it in its third segment).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image

from .weights import WanAnimateError

DEFAULT_PROMPT = "视频中的人在做动作"  # the original code's default: "the person in the video is doing actions"
TEXT_LENGTH = 512  # the transformer splits image from text tokens assuming 512 text tokens
CARRY_CHOICES = (1, 5)
MODES = ("animate", "replace")
SIZE_MULTIPLE = 16  # VAE stride 8 x transformer patch 2
STATES_KEPT = 2  # a resumed job needs the state of the segment before its first missing frame

ImageInput = np.ndarray | Image.Image


@dataclass(frozen=True)
class SegmentPlan:
    """How a shot of `frames` frames splits into segments of `length` frames, `carry` shared."""

    frames: int
    length: int
    carry: int
    padded: int  # frames after padding to whole segments
    count: int  # segments

    @property
    def stride(self) -> int:
        return self.length - self.carry

    def input_start(self, segment: int) -> int:
        """First (padded) input frame of a segment."""
        return segment * self.stride

    def output_range(self, segment: int) -> range:
        """The frames of the shot a segment yields."""
        start = self.input_start(segment)
        first = start if segment == 0 else start + self.carry
        return range(first, min(start + self.length, self.frames))

    def segment_of(self, frame: int) -> int:
        """The segment that yields `frame`."""
        if frame < self.length:
            return 0
        return min((frame - self.carry) // self.stride, self.count - 1)


def plan_segments(frames: int, segment_frame_length: int = 77, carry: int = 1) -> SegmentPlan:
    """The pipeline's segment arithmetic, with its rounding of the segment length to 4n + 1."""
    if frames < 1:
        raise WanAnimateError("the shot has no frames")
    if carry not in CARRY_CHOICES:
        raise WanAnimateError(f"carry (frames of one segment that condition the next) must be 1 or 5, not {carry}")
    length = int(segment_frame_length)
    if length % 4 != 1:
        length = length // 4 * 4 + 1
    if length <= 2 * carry:
        shortest = next(n for n in range(1, 4 * carry + 8, 4) if n > 2 * carry)
        raise WanAnimateError(f"a segment of {segment_frame_length} frames (rounded to 4n + 1: {length}) is too short "
                              f"for carry {carry}; use segments of at least {shortest} frames")
    stride = length - carry
    planned = max(frames, carry + 1)  # the pipeline plans no segment for a shot of at most `carry` frames
    last = (planned - carry) % stride
    padded = planned + (0 if last == 0 else stride - last)
    return SegmentPlan(frames, length, carry, padded, padded // stride)


class Segment(NamedTuple):
    first_frame: int  # index in the shot of frames[0]
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    state: "CarryState"


@dataclass
class CarryState:
    """What the segment after `segment` needs from it: its last decoded frames, (1, 3, carry, H, W)
    float32 in [-1, 1] as the VAE returned them, and the settings they were made with."""

    segment: int
    frames: np.ndarray
    settings: dict

    def save(self, folder: Path | str) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = folder / f"wan-carry-{self.segment:05d}"
        temporary = stem.with_name(stem.name + ".tmp.npy")
        np.save(temporary, self.frames)
        os.replace(temporary, stem.with_suffix(".npy"))
        temporary = stem.with_name(stem.name + ".tmp.json")  # written last: its presence marks a whole state
        temporary.write_text(json.dumps({"segment": self.segment, "settings": self.settings}, ensure_ascii=False),
                             encoding="utf-8")
        os.replace(temporary, stem.with_suffix(".json"))

    @staticmethod
    def saved_segments(folder: Path | str) -> list[int]:
        folder = Path(folder)
        if not folder.is_dir():
            return []
        segments = []
        for path in folder.glob("wan-carry-*.json"):
            try:
                segments.append(int(path.stem.rsplit("-", 1)[1]))
            except ValueError:
                continue
        return sorted(segments)

    @classmethod
    def load(cls, folder: Path | str, segment: int) -> "CarryState | None":
        stem = Path(folder) / f"wan-carry-{segment:05d}"
        try:
            meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
            frames = np.load(stem.with_suffix(".npy"))
        except (OSError, ValueError):
            return None
        return cls(int(meta["segment"]), frames, meta["settings"])

    @staticmethod
    def prune(folder: Path | str, keep: int = STATES_KEPT) -> None:
        for segment in CarryState.saved_segments(folder)[:-keep]:
            for suffix in (".json", ".npy"):
                (Path(folder) / f"wan-carry-{segment:05d}{suffix}").unlink(missing_ok=True)


def generate_segments(pipe, reference: ImageInput, pose_frames: Sequence[ImageInput],
                      face_frames: Sequence[ImageInput], *, height: int, width: int,
                      background: Sequence[ImageInput] | None = None, mask: Sequence[ImageInput] | None = None,
                      mode: str = "animate", prompt: str = DEFAULT_PROMPT, negative_prompt: str = "",
                      segment_frame_length: int = 77, carry: int = 1, steps: int = 20, guidance: float = 1.0,
                      seed: int = 0, start_frame: int = 0, state_dir: Path | str | None = None,
                      stop: threading.Event | None = None,
                      on_step: Callable[[int, int], None] | None = None) -> Iterator[Segment]:
    """Stream a Wan-Animate shot segment by segment: yields Segment(first_frame, frames, state).

    pipe: a WanAnimatePipeline (see weights.load_pipeline).
    reference: the character, (H', W', 3|4) uint8 RGB(A) or a PIL image; letterboxed (black) to
        height x width; an alpha channel is flattened over black first.
    pose_frames: one pose map per output frame (`wan` style), uint8 RGB, stretched to height x width.
    face_frames: one face crop per output frame (512 x 512 uint8 RGB; resized to the transformer's
        motion_encoder_size otherwise). Same count as pose_frames.
    background, mask: mode "replace" only, one per output frame: the plate the character is put into,
        and where (white = generate, black = keep the background); uint8, mask grey or RGB.
    height, width: output pixels, multiples of 16.
    segment_frame_length: frames per segment (rounded to 4n + 1); carry: 1 or 5 frames of a segment
        that condition the next; steps: denoising steps; guidance: classifier-free guidance scale
        (1.0 = none; above 1 the negative prompt and a blank face drive the unconditional pass).
    seed: of the CPU generator all noise is drawn from; same seed and inputs, same frames.
    start_frame: first frame wanted; earlier frames are not yielded (and, with a state in
        `state_dir`, not computed).
    state_dir: a folder of this job's own (the state depends on its inputs, which are not checked;
        its settings are) where the carry state of the last segments is kept for resuming.
    stop: checked before every denoising step and between segments; when set, the stream ends
        without yielding the unfinished segment.
    on_step: called with (segment, step) after each denoising step (progress reports).

    Frames come in order; a Segment's frames are (N, H, W, 3) uint8 RGB, first_frame the shot index
    of the first. Input errors raise WanAnimateError here, before anything is computed.
    """
    if mode not in MODES:
        raise WanAnimateError(f"unknown mode {mode!r}; use 'animate' or 'replace'")
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height <= 0 or width <= 0:
        raise WanAnimateError(f"Wan-Animate needs a width and height that are multiples of {SIZE_MULTIPLE}, not "
                              f"{width}x{height}; e.g. {_multiple(width)}x{_multiple(height)}")
    frames = len(pose_frames)
    plan = plan_segments(frames, segment_frame_length, carry)
    if len(face_frames) != frames:
        raise WanAnimateError(f"there are {len(face_frames)} face crops for {frames} pose frames; give one per frame")
    if mode == "replace":
        for name, track in (("background", background), ("mask", mask)):
            if track is None or len(track) != frames:
                count = 0 if track is None else len(track)
                raise WanAnimateError(f"mode 'replace' needs a {name} frame per pose frame: {count} for {frames}")
    if not 0 <= start_frame <= frames:
        raise WanAnimateError(f"start frame {start_frame} is outside the shot's {frames} frames")
    if steps < 1:
        raise WanAnimateError(f"steps must be at least 1, not {steps}")
    settings = {"frames": frames, "length": plan.length, "carry": carry, "steps": int(steps),
                "guidance": float(guidance), "seed": int(seed), "height": height, "width": width, "mode": mode,
                "prompt": prompt, "negative_prompt": negative_prompt if guidance > 1 else None}
    inputs = _Inputs(reference=_rgb_image(reference), pose=pose_frames, face=face_frames,
                     background=background if mode == "replace" else None, mask=mask if mode == "replace" else None)
    return _stream(pipe, plan, inputs, settings, start_frame, state_dir, stop, on_step)


def _multiple(value: int) -> int:
    return max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)


@dataclass
class _Inputs:
    reference: Image.Image
    pose: Sequence[ImageInput]
    face: Sequence[ImageInput]
    background: Sequence[ImageInput] | None
    mask: Sequence[ImageInput] | None


def _rgb_image(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        if image.mode == "RGBA":
            image = np.asarray(image)
        else:
            return image.convert("RGB")
    image = np.asarray(image)
    if image.ndim == 2:
        return Image.fromarray(image.astype(np.uint8)).convert("RGB")
    if image.shape[2] == 4:  # flatten over black, the colour the pipeline letterboxes with
        alpha = image[..., 3:].astype(np.float32) / 255.0
        image = np.round(image[..., :3].astype(np.float32) * alpha).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(image[..., :3]))


def _pil(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return image
    image = np.ascontiguousarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3]
    return Image.fromarray(image.astype(np.uint8, copy=False))


def _padded_sources(pipe, frames: int, padded: int) -> list[int]:
    """Padded frame -> shot frame, by the pipeline's own mirror padding."""
    if frames == 1:
        return [0] * padded  # pad_video_frames cannot mirror a single frame
    return pipe.pad_video_frames(list(range(frames)), padded)


def _stream(pipe, plan: SegmentPlan, inputs: _Inputs, settings: dict, start_frame: int,
            state_dir: Path | str | None, stop: threading.Event | None,
            on_step: Callable[[int, int], None] | None) -> Iterator[Segment]:
    if start_frame >= plan.frames:
        return
    wanted = plan.segment_of(start_frame)
    resume = _usable_state(state_dir, wanted, settings)
    begin = 0 if resume is None else resume.segment + 1
    try:
        runner = _SegmentRunner(pipe, plan, inputs, settings)
        for _skipped in range(begin):
            runner.draw_noise()  # the stream of random numbers, where an uninterrupted run has it
        carried = None if resume is None else runner.carried_tensor(resume.frames)
        for segment in range(begin, plan.count):
            if stop is not None and stop.is_set():
                return
            decoded = runner.run(segment, carried, stop, on_step)
            if decoded is None:
                return
            carried = decoded[:, :, -plan.carry:].clone()
            state = CarryState(segment, carried.float().cpu().numpy(), settings)
            if state_dir is not None:
                state.save(state_dir)
                CarryState.prune(state_dir)
            span = plan.output_range(segment)
            first = max(span.start, start_frame)
            if first >= span.stop:
                continue
            # The pipeline's output processing: (x / 2 + 0.5).clamp(0, 1), float32 numpy; then its "pil" rounding.
            chosen = decoded[:, :, first - span.start:span.stop - span.start]
            floats = pipe.video_processor.postprocess_video(chosen, output_type="np")[0]
            yield Segment(first, (floats * 255).round().astype(np.uint8), state)
    finally:
        pipe.maybe_free_model_hooks()


def _usable_state(state_dir: Path | str | None, wanted: int, settings: dict) -> CarryState | None:
    """The newest saved state of a segment before `wanted` made with these settings, if any."""
    if state_dir is None or wanted == 0:
        return None
    for segment in reversed(CarryState.saved_segments(state_dir)):
        if segment >= wanted:
            continue
        state = CarryState.load(state_dir, segment)
        if state is not None and state.settings == settings:
            return state
    return None


class _SegmentRunner:
    """The parts of the pipeline's __call__ that run once per shot, kept for its segments."""

    @torch.no_grad()
    def __init__(self, pipe, plan: SegmentPlan, inputs: _Inputs, settings: dict):
        self.pipe, self.plan, self.inputs, self.settings = pipe, plan, inputs, settings
        self.device = pipe._execution_device
        self.transformer_dtype = pipe.transformer.dtype
        self.generator = torch.Generator("cpu").manual_seed(settings["seed"])
        self.guided = settings["guidance"] > 1
        height, width = settings["height"], settings["width"]

        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=settings["prompt"], negative_prompt=settings["negative_prompt"],
            do_classifier_free_guidance=self.guided, num_videos_per_prompt=1, max_sequence_length=TEXT_LENGTH,
            device=self.device)
        self.prompt_embeds = prompt_embeds.to(self.transformer_dtype)
        self.negative_embeds = None if negative_embeds is None else negative_embeds.to(self.transformer_dtype)

        reference = inputs.reference
        pixels = pipe.vae_image_processor.preprocess(reference, height=height, width=width, resize_mode="fill")
        pixels = pixels.to(self.device, dtype=torch.float32)
        self.image_embeds = pipe.encode_image(reference, self.device).repeat(1, 1, 1).to(self.transformer_dtype)
        self.reference_latents = pipe.prepare_reference_image_latents(pixels, 1, generator=self.generator,
                                                                      device=self.device)
        self.sources = _padded_sources(pipe, plan.frames, plan.padded)

    def draw_noise(self) -> torch.Tensor:
        pipe, settings = self.pipe, self.settings
        return pipe.prepare_latents(1, num_channels_latents=pipe.vae.config.z_dim, height=settings["height"],
                                    width=settings["width"], num_frames=self.plan.length, dtype=torch.float32,
                                    device=self.device, generator=self.generator)

    def carried_tensor(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(frames).to(self.device, self.pipe.vae.dtype)

    def _video(self, track: Sequence[ImageInput], indices: list[int], processor, height: int, width: int):
        return processor.preprocess_video([_pil(track[self.sources[i]]) for i in indices], height=height,
                                          width=width).to(self.device, dtype=torch.float32)

    @torch.no_grad()
    def run(self, segment: int, carried: torch.Tensor | None, stop: threading.Event | None,
            on_step: Callable[[int, int], None] | None) -> torch.Tensor | None:
        """Denoise and decode one segment: (1, 3, N, H, W) decoded frames in [-1, 1] (its first `carry`
        frames already dropped for a later segment), or None when stopped."""
        pipe, plan, settings = self.pipe, self.plan, self.settings
        height, width, mode = settings["height"], settings["width"], settings["mode"]
        latents = self.draw_noise()
        start = plan.input_start(segment)
        indices = list(range(start, start + plan.length))
        pose = self._video(self.inputs.pose, indices, pipe.video_processor, height, width)
        face_size = pipe.transformer.config.motion_encoder_size
        face = self._video(self.inputs.face, indices, pipe.video_processor, face_size, face_size)
        face = face.to(dtype=self.transformer_dtype)
        if mode == "replace":
            background = self._video(self.inputs.background, indices, pipe.video_processor, height, width)
            mask = self._video(self.inputs.mask, indices, pipe.video_processor_for_mask, height, width)
        else:
            background = mask = None

        pose_latents = pipe.prepare_pose_latents(pose, 1, generator=self.generator, device=self.device)
        pose_latents = pose_latents.to(dtype=self.transformer_dtype)
        condition = pipe.prepare_prev_segment_cond_latents(
            carried if segment > 0 else None, background_video=background, mask_video=mask, batch_size=1,
            segment_frame_length=plan.length, start_frame=start, height=height, width=width,
            prev_segment_cond_frames=plan.carry, task=mode, generator=self.generator, device=self.device)
        reference_latents = torch.cat([self.reference_latents, condition], dim=2)

        scheduler, transformer = pipe.scheduler, pipe.transformer
        scheduler.set_timesteps(settings["steps"], device=self.device)
        for step, t in enumerate(scheduler.timesteps):
            if stop is not None and stop.is_set():
                return None
            model_input = torch.cat([latents, reference_latents], dim=1).to(self.transformer_dtype)
            timestep = t.expand(latents.shape[0])
            with transformer.cache_context("cond"):
                prediction = transformer(hidden_states=model_input, timestep=timestep,
                                         encoder_hidden_states=self.prompt_embeds,
                                         encoder_hidden_states_image=self.image_embeds,
                                         pose_hidden_states=pose_latents, face_pixel_values=face,
                                         return_dict=False)[0]
            if self.guided:
                with transformer.cache_context("uncond"):  # the unconditional pass sees a blank (-1) face
                    unconditional = transformer(hidden_states=model_input, timestep=timestep,
                                                encoder_hidden_states=self.negative_embeds,
                                                encoder_hidden_states_image=self.image_embeds,
                                                pose_hidden_states=pose_latents, face_pixel_values=face * 0 - 1,
                                                return_dict=False)[0]
                    prediction = unconditional + settings["guidance"] * (prediction - unconditional)
            latents = scheduler.step(prediction, t, latents, return_dict=False)[0]
            if on_step is not None:
                on_step(segment, step)

        vae = pipe.vae
        latents = latents.to(vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, vae.config.z_dim, 1, 1, 1).to(latents.device,
                                                                                             latents.dtype)
        recip_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, vae.config.z_dim, 1, 1, 1).to(
            latents.device, latents.dtype)
        latents = latents / recip_std + mean
        decoded = vae.decode(latents[:, :, 1:], return_dict=False)[0]  # latent frame 0 is the reference's
        return decoded[:, :, plan.carry:] if segment > 0 else decoded
