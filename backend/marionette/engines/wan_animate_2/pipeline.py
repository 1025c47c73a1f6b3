"""Wan-Animate-2's segment loop, streamed and resumable, run with the pipeline's own blocks.

diffusers' modular Wan-Animate-2 pipeline (base and distilled alike) runs: the text encoder, the
reference image's preprocessing (its frame size resolved from the requested area and the
reference's aspect, letterboxed, CLIP-encoded), the driving video's (letterboxed, padded to whole
segments by mirroring, its first frame CLIP-encoded), the reference's VAE encoding, the segment
geometry, then the segment loop -- per segment: encode its driving slice, condition on the previous
segment's decoded tail, draw its noise, reset the scheduler, the reference-extraction pass, denoise,
decode -- and at the end concatenates, trims, crops to the reference's content and postprocesses.

This runs those same blocks on the same pipeline state, in the same order, and takes each segment's
frames as its decode step leaves them, trimmed to the shot, cropped and postprocessed as the
pipeline's "np" output, uint8 = round(255 x) (as its "pil" output rounds). So for the same inputs
and seed, frame i here equals round(255 * pipeline(...)[0][i]), and a segment's frames go out as soon
as it is decoded.

Segments (the pipeline's plan): length L (1 mod 4) and carry c; segment 0 gives frames 0 .. L-1,
segment k > 0 frames c + k(L-c) .. c + (k+1)(L-c) - 1 (its first c frames re-make the previous
segment's last ones and are dropped by the pipeline); frames past the shot are trimmed.

Resume: after each segment the frames the next one conditions on (the decoded tail) and the CPU
generator's state are saved in `state_dir`. A job resumed at frame f restarts at the segment that
holds f from the state of the segment before, so its frames equal an uninterrupted run's, whatever
random draws the scheduler makes; without that state it restarts from the latest state it has (or
the start) and skips the frames before f.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from diffusers.modular_pipelines import PipelineState
from PIL import Image

from ...color_match import ColorMatch
from ...models.segments import Segment, SegmentStates, Stopped, first_frame_of, segment_of, stop_between_steps
from .weights import WanAnimate2Error

CARRY_CHOICES = (1, 5)
SIZE_MULTIPLE = 16  # the pipeline's frame size is a multiple of the VAE's 8 times the 2x2 patch
DEFAULT_PROMPT = "视频中的人在做动作"  # "the person in the video is doing actions", as Wan's animate code prompts
ENCODER_BLOCKS = ("text_encoder", "image_encoder", "video_encoder", "vae_encoder")
LOOP_BLOCKS = ("vae_encoder", "prev_frames", "prepare", "scheduler_reset", "ref_extract", "denoise_inner", "decode")


def check_plan(segment: int, carry: int) -> None:
    """WanAnimate2Error unless the pipeline can run segments of this length with this carry."""
    if carry not in CARRY_CHOICES:
        raise WanAnimate2Error(f"carry must be one of {', '.join(map(str, CARRY_CHOICES))}, not {carry}")
    if segment % 4 != 1:
        raise WanAnimate2Error(f"segment must be 1 more than a multiple of 4 (the VAE's 4-frame steps), e.g. 81 or 77; "
                               f"not {segment}")
    if segment <= 2 * carry:  # fewer new frames than the next segment conditions on: the pipeline fails
        shortest = 4 * (2 * carry // 4 + 1) + 1
        raise WanAnimate2Error(f"segment {segment} is too short for carry {carry}: a segment must be longer than twice "
                               f"its carry; the shortest is {shortest}")


def area_request(height: int, width: int, reference_height: int, reference_width: int) -> tuple[int, int]:
    """The height and width to ask the pipeline for so that it makes frames of exactly height x width.

    The pipeline takes height x width as a target area and sizes its frames from it and the reference's
    aspect with float square roots, floored to multiples of 16; the float can fall just short, so an
    exact request can lose 16 pixels (832x480 comes out 832x464). Asking for up to 3 more pixels a side
    lands on the size wherever it can (every multiple of 16 up to 4096 with the reference at that size)."""
    def resolved(area_height, area_width):  # the pipeline's own arithmetic (its reference preprocessing)
        aspect, area = reference_height / reference_width, area_height * area_width
        return int(math.sqrt(area * aspect)) // 16 * 16, int(math.sqrt(area / aspect)) // 16 * 16
    for extra_height in range(4):
        for extra_width in range(4):
            if resolved(height + extra_height, width + extra_width) == (height, width):
                return height + extra_height, width + extra_width
    return height, width  # a reference of another aspect: the pipeline keeps the reference's


def generate_segments(pipe, reference: np.ndarray, driving: Sequence[np.ndarray], *, height: int, width: int,
                      prompt: str = DEFAULT_PROMPT, negative_prompt: str | None = None, segment: int = 81,
                      carry: int = 1, steps: int = 40, seed: int = 42, start_frame: int = 0,
                      state_dir: Path | None = None, stop: threading.Event | None = None,
                      color: ColorMatch | None = None,
                      on_segment: Callable[[int], None] | None = None) -> Iterator[Segment]:
    """Yield the shot's frames segment by segment, as each is decoded, from the segment holding
    `start_frame` on.

    reference: (H, W, 3) uint8 RGB; driving: one (H', W', 3) uint8 RGB frame per output frame;
    height, width: the frame size (multiples of 16) for a reference of that aspect; the pipeline keeps
    the reference's aspect otherwise (see area_request). color: match each segment's colours
    to a reference's (see color_match). on_segment(k): called as segment k starts (tests, progress).
    """
    check_plan(segment, carry)
    frames = len(driving)
    if frames == 0:
        return
    # A shot of at most `carry` frames gives the pipeline no segment: lengthen it (the last frame held)
    # and keep only the shot's frames.
    driving = list(driving) + [driving[-1]] * max(0, carry + 1 - frames)
    generator = torch.Generator("cpu").manual_seed(int(seed))
    height, width = area_request(height, width, reference.shape[0], reference.shape[1])
    inputs = dict(image=_pil(reference), driving_video=[_pil(frame) for frame in driving], prompt=prompt,
                  negative_prompt=negative_prompt, height=height, width=width, segment_frame_length=segment,
                  prev_segment_conditioning_frames=carry, num_inference_steps=steps, generator=generator,
                  output_type="np")
    resume = SegmentStates(state_dir, WanAnimate2Error)
    first = resume.start(segment_of(start_frame, segment, carry) if start_frame else 0)
    stopping = stop_between_steps(pipe.transformer, stop)
    try:
        with torch.no_grad():
            state = _encoded(pipe, inputs)
            loop = pipe.blocks.sub_blocks["denoise"].sub_blocks["denoise"]
            block_state = loop.get_block_state(state)
            block_state.segment_frames = []
            block_state.out_frames = resume.tail(first)
            if first > 0:
                generator.set_state(resume.generator(first))
            if color is not None:
                color.restore(resume.folder)
            crop_top, crop_left, crop_height, crop_width = state.get("crop_region")
            for k in range(first, block_state.num_segments):
                if stop is not None and stop.is_set():
                    return
                if on_segment is not None:
                    on_segment(k)
                for name in LOOP_BLOCKS:
                    _, block_state = loop.sub_blocks[name](pipe, block_state, k=k)
                decoded = block_state.segment_frames.pop()
                start = first_frame_of(k, segment, carry)
                decoded = decoded[:, :, :max(0, frames - start)]
                decoded = decoded[:, :, :, crop_top:crop_top + crop_height, crop_left:crop_left + crop_width]
                video = pipe.video_processor.postprocess_video(decoded, output_type="np")[0]
                images = [np.round(frame * 255).astype(np.uint8) for frame in video]
                resume.save(k, block_state.out_frames[:, :, -carry:], generator)
                if color is not None:
                    images = color.apply(k, images, resume.folder)
                if images:
                    yield Segment(start, images)
    except Stopped:
        return
    finally:
        stopping.remove()


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(image[..., :3]))


def _encoded(pipe, inputs: dict) -> PipelineState:
    """The pipeline state after its encoder blocks and its segment geometry, its inputs completed with
    the pipeline's own defaults, as its __call__ completes them."""
    blocks = pipe.blocks
    core = blocks.sub_blocks.get("denoise")
    names = list(blocks.sub_blocks)
    if names[:4] != list(ENCODER_BLOCKS) or core is None or list(core.sub_blocks) != ["prepare_segments", "denoise"] \
            or list(core.sub_blocks["denoise"].sub_blocks) != list(LOOP_BLOCKS):
        raise WanAnimate2Error("the installed diffusers' Wan-Animate-2 pipeline is built of other blocks than this "
                               "engine runs; install the diffusers release pyproject.toml asks for")
    state = PipelineState()
    for param in blocks.inputs:
        if param.name in inputs:
            state.set(param.name, inputs[param.name], param.kwargs_type)
        elif param.name is not None and param.name not in state.values:
            state.set(param.name, param.default, param.kwargs_type)
    for name in ENCODER_BLOCKS:
        _, state = blocks.sub_blocks[name](pipe, state)
    _, state = core.sub_blocks["prepare_segments"](pipe, state)
    return state
