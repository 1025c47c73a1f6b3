"""A Wan-VACE shot clip by clip, streamed and resumable, each clip one call of diffusers' WanVACEPipeline.

One clip (a shot of at most `clip` frames) is exactly the pipeline's own call: the control frames as
`video` (padded with the last one to a length of 4n + 1 frames, the VAE's temporal step, and trimmed
back after), the reference image as `reference_images`, no mask (every frame generated), the CPU
generator seeded with the job's seed. Plate mode composes each frame as VACE composes a repaint with
a control: the plate outside the rig's mask, the control map inside, the mask white there. Frames come out as the pipeline's "np" output, uint8 =
round(255 x).

Longer shots, Marionette's rule: clip k > 0 starts `clip - carry` frames after clip k - 1 and
continues it through VACE's own extension mechanism: its first `carry` frames are the previous clip's
last `carry` output frames, given as video with the mask black there (kept), and the control frames
after them with the mask white (generated); those first frames are not output again. So clip k
makes frames carry + k(clip - carry) .. carry + (k+1)(clip - carry) - 1 (models/segments.py), one
CPU generator runs through all clips, and after each clip its last frames and the generator's state
are saved, so a resumed job continues exactly.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from ...models.segments import (Segment, SegmentStates, Stopped, segment_count, segment_of,
                                stop_between_steps)
from .weights import WanVaceError

CLIP = 81  # frames per clip, as the model was trained and its authors run it
CARRY_CHOICES = (1, 5)  # one latent frame, or two: whole VAE steps
SIZE_MULTIPLE = 16  # the VAE's 8 times the transformer's 2x2 patch
# Wan's own negative prompt (its shared config's sample_neg_prompt), which VACE's demo and scripts use.
NEGATIVE_PROMPT = ("色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，"
                   "丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，"
                   "静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走")


def check_plan(clip: int, carry: int) -> None:
    if carry not in CARRY_CHOICES:
        raise WanVaceError(f"carry must be one of {', '.join(map(str, CARRY_CHOICES))}, not {carry}")
    if clip % 4 != 1:
        raise WanVaceError(f"clip must be 1 more than a multiple of 4 (the VAE's 4-frame steps), e.g. 81; not {clip}")
    if clip <= carry:
        raise WanVaceError(f"clip {clip} is too short for carry {carry}: a clip must make new frames after the ones "
                           f"it keeps")


def check_size(width: int, height: int) -> None:
    if width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
        raise WanVaceError(f"Wan-VACE makes frames whose width and height are multiples of {SIZE_MULTIPLE}; "
                           f"{width}x{height} is not (e.g. 832x480 or 480x832)")


def clip_length(frames: int, clip: int) -> int:
    """The frames a clip is run with to make `frames`: the next 4n + 1, at most `clip`."""
    return min(clip, (max(frames, 1) + 2) // 4 * 4 + 1)


def generate_clips(pipe, reference: np.ndarray, control: Sequence[np.ndarray], *, height: int, width: int,
                   prompt: str, negative_prompt: str = NEGATIVE_PROMPT, clip: int = CLIP, carry: int = 5,
                   steps: int = 25, guidance: float = 5.0, conditioning_scale: float = 1.0, seed: int = 42,
                   start_frame: int = 0, state_dir: Path | None = None, background: Sequence[np.ndarray] | None = None,
                   mask: Sequence[np.ndarray] | None = None, stop: threading.Event | None = None,
                   on_clip=None) -> Iterator[Segment]:
    """Yield the shot's frames clip by clip, as each is decoded, from the clip holding `start_frame` on.

    reference: (H, W, 3+) uint8 RGB; control: one (H, W, 3) uint8 RGB control map per output frame
    (pose maps or depth), at height x width. Plate mode, with `background` (the plate's frames) and
    `mask` (white where the character is generated): each frame is the plate with the control map
    inside the mask, generated there only (plate_frame). on_clip(k): called as clip k starts."""
    check_plan(clip, carry)
    check_size(width, height)
    frames = len(control)
    if frames == 0:
        return
    generator = torch.Generator("cpu").manual_seed(int(seed))
    states = SegmentStates(state_dir, WanVaceError)
    first = states.start(segment_of(start_frame, clip, carry) if start_frame else 0)
    tail = states.tail(first)
    if first > 0:
        generator.set_state(states.generator(first))
    stopping = stop_between_steps(pipe.transformer, stop)
    try:
        with torch.no_grad():
            for k in range(first, segment_count(frames, clip, carry)):
                if stop is not None and stop.is_set():
                    return
                if on_clip is not None:
                    on_clip(k)
                begin = k * (clip - carry)
                end = min(frames, begin + clip)
                length = clip_length(end - begin, clip)
                shown = [min(i, end - 1) for i in range(begin, begin + length)]
                if background is None:
                    window = [_pil(control[i]) for i in shown]
                    masks = None if k == 0 else [Image.new("L", (width, height), 255)] * length
                else:
                    window, masks = zip(*(plate_frame(control[i], background[i], mask[i]) for i in shown))
                    window, masks = list(window), list(masks)
                if k > 0:  # the previous clip's last frames, kept (black), then the rest as above
                    window[:carry] = [_pil(frame) for frame in tail.numpy()]
                    masks[:carry] = [Image.new("L", (width, height), 0)] * carry
                video = pipe(prompt=prompt, negative_prompt=negative_prompt, video=window, mask=masks,
                             reference_images=[_pil(reference)], conditioning_scale=conditioning_scale,
                             height=height, width=width, num_frames=length, num_inference_steps=steps,
                             guidance_scale=guidance, generator=generator, output_type="np").frames[0]
                images = [np.round(frame * 255).astype(np.uint8) for frame in video[:end - begin]]
                tail = torch.from_numpy(np.stack(images[-carry:]))
                states.save(k, tail, generator)
                skip = 0 if k == 0 else carry
                yield Segment(begin + skip, images[skip:])
    except Stopped:
        return
    finally:
        stopping.remove()


def plate_frame(control: np.ndarray, plate: np.ndarray, mask: np.ndarray) -> tuple[Image.Image, Image.Image]:
    """VACE's composition of a repaint with a control (vace/annotators/composition.py): the plate
    outside the mask, the control map inside it; the mask (white = generate) as the repaint's."""
    inside = np.asarray(mask)[..., :3].mean(axis=2) >= 128
    frame = np.where(inside[..., None], np.asarray(control)[..., :3], np.asarray(plate)[..., :3])
    return _pil(frame), Image.fromarray((inside * 255).astype(np.uint8), "L")


def _pil(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(np.asarray(image)[..., :3]))
