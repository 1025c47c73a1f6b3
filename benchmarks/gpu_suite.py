"""Every GPU measurement of the diffusion engines in one go: speed, half precision, memory settings, profiles.

    GPU:  python benchmarks/gpu_suite.py --out out/gpu-suite                  (full sizes, bfloat16/float16)
    CPU:  python benchmarks/gpu_suite.py --tiny --out out/gpu-suite-tiny      (the same items at toy sizes)
    one:  python benchmarks/gpu_suite.py --out out/gpu-suite --only wan-animate-bf16

Each item runs the engine's own generation code (the pipelines the backend runs, the shared placement
of models/placement.py) on full-size architectures with random weights built on the device (speed does
not depend on weight values). Results go to OUT/results.json as each item ends and OUT/results.md is
rewritten from it, so a second call resumes after the last finished item: finished and failed items
are kept (--retry runs the failed again), an item that was started but never finished (the process
died in it) is tried once more, then recorded as crashed. --budget stops before an item whose estimate
no longer fits, leaving it to the next call.

Groups (items run in the order of ITEMS, which keeps the items that share a model together):
    measure   seconds per output frame, frames/s, FLOPs of the whole generation, MFU against this
              device's measured matmul peak, peak GPU memory
    faithful  the tiny-weight cases of the CPU tests, bfloat16/float16 against float32 on this device:
              frame differences and any NaN out of a VAE
    memory    the 14B models with float8 transformer weights and group offload: peak memory and speed
    profile   torch profiler over one run of 1 step: where the time goes, and (CUDA) where the host
              waits for the GPU (torch's sync debug mode)

Timing: the UNet engines' whole run, after a warm-up run of 1 step; the Wan engines' one run of 2 steps
(no warm-up), their steps timed where the scheduler's step returns, the run of N steps taken as that run
plus N - 2 times its second step (every step costs the same; the JSON says which was done). FLOPs: counted by PyTorch's FlopCounterMode on runs of 1 and
2 steps (UNet engines), on the meta device (wan-animate), or by the formulas benchmarks/bench_wan_animate_2.py
and bench_wan_vace.py check against counted matrix products (flex attention is not counted by PyTorch).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "backend")]

from bench_animate_anyone import SD15_UNET, matmul_peak, sync  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

diffusers_logging.set_verbosity_error()  # the casts below are the loaders' own; diffusers warns of any .to(dtype)

# Frame levels (0-255), half precision against float32. bfloat16 keeps 8 bits of mantissa to float16's 11,
# so its rounding is 8 times coarser.
HALF_TOLERANCE = {"fp16": {"mean": 1.0, "p99": 4}, "bf16": {"mean": 4.0, "p99": 24}}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
BF16, FP16 = torch.bfloat16, torch.float16


@dataclass(frozen=True)
class Item:
    name: str
    group: str
    estimate_s: float  # on an H100/H200, building included
    run: Callable[["Suite"], dict]


class Suite:
    """The device, the sizes (full or tiny), the models built so far (one engine's at a time), the file."""

    def __init__(self, out: Path, device: torch.device, tiny: bool):
        self.out, self.device, self.tiny = out, device, tiny
        self.path = out / "results.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"items": {}, "attempts": {}}
        self._built: dict = {}

    def built(self, key, build: Callable):
        """The object `build` makes, kept until another key is asked for (the 14B models do not fit twice)."""
        if key not in self._built:
            self._built.clear()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self._built[key] = build()
        return self._built[key]

    def release(self) -> None:
        """Drop the models built so far (the next item builds its own)."""
        self.built(None, lambda: None)

    def peak(self, dtype: torch.dtype) -> float:
        name = f"matmul-peak-{short(dtype)}"
        result = self.data["items"].get(name)
        if not result or "flops_per_s" not in result:
            result = {"flops_per_s": matmul_peak(self.device, dtype)}
        return result["flops_per_s"]

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(self.data, indent=1))
        temporary.replace(self.path)  # a kill mid-write leaves the last whole file
        (self.out / "results.md").write_text(markdown(self.data))


def short(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


# ---------------------------------------------------------------------------------------------- timing

def peak_memory_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # the process's, over its life


def timed(device: torch.device, frames_of) -> tuple[float, int]:
    sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in frames_of)
    sync(device)
    return time.perf_counter() - start, count


@contextmanager
def step_marks(scheduler, device: torch.device):
    """The times at which each call of scheduler.step (one per denoising step) returns, synchronised."""
    marks: list[float] = []
    original = scheduler.step

    def step(*args, **kwargs):
        output = original(*args, **kwargs)
        sync(device)
        marks.append(time.perf_counter())
        return output
    scheduler.step = step  # on the instance: the class's method comes back when it is deleted
    try:
        yield marks
    finally:
        del scheduler.step


def counted_flops(run: Callable[[int], object], steps: int) -> float:
    """FLOPs of a run of `steps` steps, from counted runs of 1 and 2 (every step costs the same)."""
    totals = []
    for count in (1, 2):
        with FlopCounterMode(display=False) as counter:
            for _ in run(count):
                pass
        totals.append(counter.get_total_flops())
    return float(totals[0] + (steps - 1) * (totals[1] - totals[0]))


def measure_generation(suite: Suite, run: Callable[[int], object], steps: int, dtype: torch.dtype,
                       flops: Callable[[int], float] | None, scheduler=None) -> dict:
    """Time `run(steps)` (an iterator of output frames) as the module docstring says; FLOPs and MFU.
    With the pipeline's `scheduler`, one run of 2 steps is timed (no warm-up: the first step takes it)
    and the run of `steps` is that run plus (steps - 2) times its second step."""
    device = suite.device
    if scheduler is None:
        for _ in run(1):  # warm-up: kernels chosen, workspaces allocated
            pass
        peak_memory_reset(device)
        seconds, frames = timed(device, run(steps))
        timing = f"the whole run of {steps} steps timed (after a warm-up run)"
    else:
        peak_memory_reset(device)
        with step_marks(scheduler, device) as marks:
            start = time.perf_counter()
            measured, frames = timed(device, run(2))
        step_two = marks[1] - marks[0]
        seconds = measured + (steps - 2) * step_two
        timing = (f"one run of 2 steps timed ({measured:.3f} s: up to the end of step 1 {marks[0] - start:.3f} s, "
                  f"step 2 {step_two:.3f} s), extrapolated to {steps} steps")
    result = {"frames": frames, "seconds": seconds, "seconds_per_frame": seconds / frames,
              "frames_per_second": frames / seconds, "peak_memory_gib": peak_memory_gib(device), "timing": timing}
    if flops is not None:
        total = flops(steps)
        peak = suite.peak(dtype)
        result.update(tflop=total / 1e12, tflop_per_frame=total / frames / 1e12,
                      achieved_tflop_per_s=total / seconds / 1e12, matmul_peak_tflop_per_s=peak / 1e12,
                      mfu=total / seconds / peak)
    return result


# --------------------------------------------------------------------------------------------- building

def on_device(suite: Suite, build: Callable):
    """Build with parameters made directly on the device (random weights; no host copy)."""
    with torch.device(suite.device):
        return build()


def cast_like_release(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """As from_pretrained(dtype=...) leaves a model: every part in dtype but the modules the model keeps
    in float32 (diffusers keeps them whatever the dtype; transformers for float16 only)."""
    keep = list(getattr(module, "_keep_in_fp32_modules", None) or [])
    is_diffusers = type(module).__module__.startswith("diffusers")
    module.to(dtype)
    if keep and dtype != torch.float32 and (is_diffusers or dtype == torch.float16):
        for name, part in module.named_modules():
            if any(k in name.split(".") for k in keep):
                part.float()
    return module.eval()


def rng_images(count: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


# ----------------------------------------------------------------------------------- animate-anyone, aniportrait

POSE2VIDEO = {"full": dict(width=512, height=768, frames=24, window=24, overlap=4, steps=25, guidance=3.5),
              "tiny": dict(width=64, height=64, frames=6, window=4, overlap=1, steps=2, guidance=3.5)}


def pose2video_pipeline(suite: Suite, engine: str, dtype: torch.dtype):
    from marionette.engines.animate_anyone.pipeline import AnimateAnyonePipeline

    def build():
        if suite.tiny:
            from tiny_animate_anyone import tiny_networks
            networks = tiny_networks(guider=engine)[0]
        else:
            networks = on_device(suite, partial(full_size_pose2video_networks, engine))
        return AnimateAnyonePipeline(networks, suite.device, dtype, guider=engine)
    return suite.built((engine, dtype, suite.tiny), build)


def full_size_pose2video_networks(engine: str):
    from bench_animate_anyone import full_size_networks

    from marionette.engines.animate_anyone.models import build_aniportrait_pose_guider

    networks = full_size_networks()
    if engine == "aniportrait":
        networks.pose_guider = build_aniportrait_pose_guider(SD15_UNET)
    return networks


def pose2video_run(pipeline, shot: dict):
    reference = rng_images(1, shot["height"], shot["width"], seed=1)[0]
    maps = rng_images(shot["frames"], shot["height"], shot["width"], seed=2)

    def run(steps: int):
        return pipeline(reference, maps, shot["width"], shot["height"], steps=steps, guidance=shot["guidance"],
                        seed=1, window=shot["window"], overlap=shot["overlap"])
    return run


def measure_pose2video(engine: str, dtype: torch.dtype, suite: Suite) -> dict:
    shot = POSE2VIDEO["tiny" if suite.tiny else "full"]
    run = pose2video_run(pose2video_pipeline(suite, engine, dtype), shot)
    result = measure_generation(suite, run, shot["steps"], dtype, partial(counted_flops, run))
    return {"engine": engine, "dtype": short(dtype), "settings": shot, **result}


# -------------------------------------------------------------------------------------------------- echomimic

# Tiny: 96 px, as the goldens (at 64 the tiny UNet's coarsest GroupNorms see 2 values, amplifying rounding).
ECHOMIMIC = {"full": dict(width=512, height=512, frames=24), "tiny": dict(width=96, height=96, frames=6)}


def echomimic_pipeline(suite: Suite, accelerated: bool, dtype: torch.dtype):
    from marionette.engines.echomimic.pipeline import EchoMimicPipeline

    def build():
        if suite.tiny:
            from tiny_echomimic import tiny_networks
            networks = tiny_networks(accelerated=accelerated)[0]
        else:
            from bench_echomimic import full_size_networks
            networks = on_device(suite, partial(full_size_networks, "audio", accelerated))
        return EchoMimicPipeline(networks, suite.device, dtype)
    return suite.built(("echomimic", accelerated, dtype, suite.tiny), build)


def echomimic_run(pipeline, shot: dict, guidance: float | None = None):
    from marionette.engines.echomimic.face_mask import face_box_mask

    width, height = shot["width"], shot["height"]
    reference = rng_images(1, height, width, seed=1)[0]
    features = np.random.default_rng(3).standard_normal(
        (shot["frames"], 50, pipeline.networks.audio_encoder.width)).astype(np.float32)
    mask = face_box_mask(width, height, (width * 0.3, height * 0.2, width * 0.7, height * 0.8))

    def run(steps: int):
        return pipeline(reference, features, width, height, face_mask=mask, steps=steps, guidance=guidance, seed=1)
    return run


def measure_echomimic(accelerated: bool, dtype: torch.dtype, suite: Suite) -> dict:
    shot = ECHOMIMIC["tiny" if suite.tiny else "full"]
    steps = 6 if accelerated else 30
    if suite.tiny:
        steps = 2
    run = echomimic_run(echomimic_pipeline(suite, accelerated, dtype), shot)
    result = measure_generation(suite, run, steps, dtype, partial(counted_flops, run))
    guidance = 1.0 if accelerated else 2.5
    return {"engine": "echomimic", "dtype": short(dtype),
            "settings": {**shot, "steps": steps, "guidance": guidance, "accelerated": accelerated}, **result}


# ------------------------------------------------------------------------------------------------ wan engines

WAN_ANIMATE = {"full": dict(width=832, height=480, frames=77, segment=77, steps=20, guidance=1.0),
               "tiny": dict(width=32, height=32, frames=5, segment=5, steps=3, guidance=1.0)}
WAN_ANIMATE_2 = {"full": dict(frames=81, segment=81), "tiny": dict(frames=5, segment=5)}
WAN_ANIMATE_2_AREAS = {"832x480": (832, 480), "default": (640, 800)}  # width, height; default: the pipeline's area
WAN_ANIMATE_2_GUIDANCE = {"base": 3.0, "distilled": 1.0}  # the engine's defaults
WAN_VACE = {"full": dict(width=832, height=480, frames=81, clip=81, steps=25, guidance=5.0),
            "tiny": dict(width=48, height=32, frames=9, clip=9, steps=3, guidance=5.0)}
WAN_VACE_14B = dict(num_attention_heads=40, ffn_dim=13824, num_layers=40, vace_layers=list(range(0, 40, 5)))
WAN_VACE_1_3B = dict(num_attention_heads=12, ffn_dim=8960, num_layers=30, vace_layers=list(range(0, 30, 2)))


def place(pipe, suite: Suite, dtype: torch.dtype, offload: str = "none", transformer_weights: str = "dtype"):
    """The parts cast as the engines' loaders leave them, then placed by the engines' own placement."""
    from marionette.models.placement import place_pipeline

    for name in ("transformer", "text_encoder", "image_encoder"):
        if getattr(pipe, name, None) is not None:
            cast_like_release(getattr(pipe, name), dtype)
    pipe.vae.to(torch.float32)
    place_pipeline(pipe, suite.device, dtype, offload, transformer_weights)
    return pipe


def full_size_wan_parts(suite: Suite, image_encoder: bool = True) -> dict:
    """The released umT5-XXL encoder, CLIP ViT-H/14 and Wan VAE, random weights, on the device."""
    from bench_wan_animate import CLIP_VIT_H, UMT5_XXL
    from diffusers import AutoencoderKLWan
    from tiny_wan_animate import tiny_tokenizer
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    def build():
        parts = {"tokenizer": tiny_tokenizer(),  # umT5's ids run to 256384; the tokens' count is what costs
                 "text_encoder": UMT5EncoderModel(UMT5Config(**UMT5_XXL)), "vae": AutoencoderKLWan()}
        if image_encoder:
            parts["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H))
        return parts
    return on_device(suite, build)


def wan_animate_pipeline(suite: Suite, dtype: torch.dtype, placement: tuple[str, str] = ("none", "dtype")):
    def build():
        from diffusers import UniPCMultistepScheduler, WanAnimatePipeline, WanAnimateTransformer3DModel
        from transformers import CLIPImageProcessor

        if suite.tiny:
            from tiny_wan_animate import tiny_components
            parts = tiny_components()
        else:
            from bench_wan_animate import TRANSFORMER
            parts = {**full_size_wan_parts(suite), "image_processor": CLIPImageProcessor(),
                     "transformer": on_device(suite, lambda: WanAnimateTransformer3DModel(**TRANSFORMER)),
                     "scheduler": UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                          num_train_timesteps=1000, flow_shift=5.0)}
        pipe = WanAnimatePipeline(**parts)
        pipe.set_progress_bar_config(disable=True)
        return place(pipe, suite, dtype, *placement)
    return suite.built(("wan-animate", dtype, placement, suite.tiny), build)


def wan_animate_flops(pipe, shot: dict, steps: int) -> float:
    """On the meta device, from the pipeline's own configs: the denoising steps and the segment's VAE work."""
    from bench_wan_animate import count_on_meta

    vision = pipe.image_encoder.config
    _, work = count_on_meta(shot["width"], shot["height"], shot["segment"], transformer=dict(pipe.transformer.config),
                            vae=dict(pipe.vae.config), image_tokens=(vision.image_size // vision.patch_size) ** 2 + 1)
    passes = 2 if shot["guidance"] > 1 else 1
    return steps * passes * work["step"] + 2 * work["vae_encode_segment"] + work["vae_decode_segment"]


def wan_animate_run(pipe, shot: dict):
    """steps -> the shot's frames, through the engine's segment loop."""
    from marionette.engines.wan_animate.pipeline import generate_segments

    reference = rng_images(1, shot["height"], shot["width"], seed=1)[0]
    pose = rng_images(shot["frames"], shot["height"], shot["width"], seed=2)
    face_size = pipe.transformer.config.motion_encoder_size
    faces = rng_images(shot["frames"], face_size, face_size, seed=3)

    def run(steps: int):
        for segment in generate_segments(pipe, reference, pose, faces, height=shot["height"], width=shot["width"],
                                         segment_frame_length=shot["segment"], steps=steps,
                                         guidance=shot["guidance"], seed=1):
            yield from segment.frames
    return run


def measure_wan_animate(dtype: torch.dtype, placement: tuple[str, str], suite: Suite) -> dict:
    shot = WAN_ANIMATE["tiny" if suite.tiny else "full"]
    pipe = wan_animate_pipeline(suite, dtype, placement)
    result = measure_generation(suite, wan_animate_run(pipe, shot), shot["steps"], dtype,
                                partial(wan_animate_flops, pipe, shot), scheduler=pipe.scheduler)
    return {"engine": "wan-animate", "dtype": short(dtype), "settings": {**shot, "offload": placement[0],
            "transformer_weights": placement[1]}, **result}


def wan_animate_2_pipeline(suite: Suite, variant: str, dtype: torch.dtype,
                           placement: tuple[str, str] = ("none", "dtype")):
    """The variant's pipeline; base and distilled share one set of parts (the same architecture), so
    the transformer is built, placed and compiled once for both."""
    from diffusers.modular_pipelines import WanAnimate2Blocks, WanAnimate2DistilledBlocks

    def build():
        from diffusers import DPMSolverMultistepScheduler
        from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2Transformer3DModel

        from marionette.engines.wan_animate_2.weights import compile_transformer_blocks

        if suite.tiny:
            from tiny_wan_animate_2 import tiny_components
            parts = tiny_components()
        else:
            parts = {**full_size_wan_parts(suite),
                     "transformer": on_device(suite, WanAnimate2Transformer3DModel),  # its defaults: the release
                     "scheduler": DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                                              flow_shift=5.0, num_train_timesteps=1000)}
        pipe = WanAnimate2DistilledBlocks().init_pipeline()
        pipe.update_components(**parts)
        place(pipe, suite, dtype, *placement)
        if suite.device.type == "cuda":  # as the engine does there: its flex attention needs it
            compile_transformer_blocks(pipe, *placement)
        return {"distilled": pipe, "parts": parts}
    pipelines = suite.built(("wan-animate-2", dtype, placement, suite.tiny), build)
    if variant not in pipelines:
        pipe = WanAnimate2Blocks().init_pipeline()
        pipe.update_components(**pipelines["parts"])
        pipelines[variant] = pipe
    return pipelines[variant]


def wan_animate_2_flops(pipe, variant: str, width: int, height: int, segment: int, steps: int) -> float:
    """The formula of bench_wan_animate_2.py for the pipeline's own transformer config: one reference
    pass and steps x passes denoising passes over one segment (the VAE and encoders left out)."""
    from bench_wan_animate_2 import CLIP_TOKENS, SAMPLING, call_flops

    config = pipe.transformer.config
    formula_config = dict(dim=config.dim, ffn_dim=config.ffn_dim, num_layers=config.num_layers, text_len=512,
                          text_dim=config.text_dim, in_dim=config.in_dim, out_dim=config.out_dim,
                          freq_dim=config.freq_dim, patch=4)
    frames, tokens = (segment - 1) // 4 + 1, (height // 16) * (width // 16)
    reference = call_flops(formula_config, "extract", frames, tokens, CLIP_TOKENS)
    denoise = call_flops(formula_config, "cached", frames, tokens, CLIP_TOKENS)
    return reference + steps * SAMPLING[variant][1] * denoise


def wan_animate_2_run(suite: Suite, pipe, variant: str, area: str):
    """(steps -> the shot's frames through the engine's segment loop, width, height); the variant's
    guidance set on the pipeline."""
    from marionette.engines.wan_animate_2.pipeline import generate_segments
    from marionette.engines.wan_animate_2.weights import set_guidance

    set_guidance(pipe, variant, WAN_ANIMATE_2_GUIDANCE[variant])
    shot = WAN_ANIMATE_2["tiny" if suite.tiny else "full"]
    width, height = (64, 96) if suite.tiny else WAN_ANIMATE_2_AREAS[area]
    reference = rng_images(1, height, width, seed=1)[0]
    driving = rng_images(shot["frames"], height, width, seed=2)

    def run(steps: int):
        for segment in generate_segments(pipe, reference, driving, height=height, width=width,
                                         segment=shot["segment"], steps=steps, seed=1):
            yield from segment.frames
    return run, width, height


def measure_wan_animate_2(variant: str, area: str, dtype: torch.dtype, placement: tuple[str, str],
                          suite: Suite) -> dict:
    steps = 2 if suite.tiny else {"base": 40, "distilled": 10}[variant]
    shot = WAN_ANIMATE_2["tiny" if suite.tiny else "full"]
    pipe = wan_animate_2_pipeline(suite, variant, dtype, placement)
    run, width, height = wan_animate_2_run(suite, pipe, variant, area)
    result = measure_generation(
        suite, run, steps, dtype, partial(wan_animate_2_flops, pipe, variant, width, height, shot["segment"]),
        scheduler=pipe.scheduler)
    guidance = WAN_ANIMATE_2_GUIDANCE[variant]
    return {"engine": f"wan-animate-2 ({variant})", "dtype": short(dtype),
            "settings": {"width": width, "height": height, **shot, "steps": steps, "guidance": guidance,
                         "offload": placement[0], "transformer_weights": placement[1]}, **result}


def wan_vace_pipeline(suite: Suite, size: str, dtype: torch.dtype, placement: tuple[str, str] = ("none", "dtype")):
    def build():
        from diffusers import UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel

        if suite.tiny:
            from tiny_wan_vace import tiny_pipeline
            pipe = tiny_pipeline()
        else:
            config = dict(WAN_VACE_14B if size == "14b" else WAN_VACE_1_3B, attention_head_dim=128, in_channels=16,
                          out_channels=16, text_dim=4096, freq_dim=256, patch_size=(1, 2, 2), cross_attn_norm=True,
                          qk_norm="rms_norm_across_heads", eps=1e-6, vace_in_channels=96)
            pipe = WanVACEPipeline(**full_size_wan_parts(suite, image_encoder=False),
                                   transformer=on_device(suite, lambda: WanVACETransformer3DModel(**config)),
                                   scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                                     use_flow_sigmas=True, num_train_timesteps=1000,
                                                                     flow_shift=3.0))
        pipe.set_progress_bar_config(disable=True)
        return place(pipe, suite, dtype, *placement)
    return suite.built(("wan-vace", size, dtype, placement, suite.tiny), build)


def wan_vace_flops(pipe, shot: dict, steps: int) -> float:
    """The formula of bench_wan_vace.py for the pipeline's own transformer config (the VAE left out)."""
    from bench_wan_vace import TEXT_TOKENS, call_flops

    config = pipe.transformer.config
    formula_config = dict(dim=config.num_attention_heads * config.attention_head_dim, ffn_dim=config.ffn_dim,
                          num_layers=config.num_layers, vace_layers=len(config.vace_layers),
                          text_dim=config.text_dim, freq_dim=config.freq_dim)
    tokens = ((shot["clip"] - 1) // 4 + 2) * (shot["height"] // 16) * (shot["width"] // 16)
    passes = 2 if shot["guidance"] > 1 else 1
    return steps * passes * sum(call_flops(formula_config, tokens, TEXT_TOKENS).values())


def wan_vace_run(pipe, shot: dict):
    """steps -> the shot's frames, through the engine's clip loop."""
    from marionette.engines.wan_vace.pipeline import generate_clips

    reference = rng_images(1, shot["height"], shot["width"], seed=1)[0]
    control = rng_images(shot["frames"], shot["height"], shot["width"], seed=2)

    def run(steps: int):
        for clip in generate_clips(pipe, reference, control, height=shot["height"], width=shot["width"],
                                   prompt="a person dancing", clip=shot["clip"], steps=steps,
                                   guidance=shot["guidance"], seed=1):
            yield from clip.frames
    return run


def measure_wan_vace(size: str, dtype: torch.dtype, placement: tuple[str, str], suite: Suite) -> dict:
    shot = WAN_VACE["tiny" if suite.tiny else "full"]
    pipe = wan_vace_pipeline(suite, size, dtype, placement)
    result = measure_generation(suite, wan_vace_run(pipe, shot), shot["steps"], dtype,
                                partial(wan_vace_flops, pipe, shot), scheduler=pipe.scheduler)
    return {"engine": f"wan-vace ({size})", "dtype": short(dtype),
            "settings": {**shot, "offload": placement[0], "transformer_weights": placement[1]}, **result}


# ---------------------------------------------------------------------------------------------------- peaks

def measure_peak(dtype: torch.dtype, suite: Suite) -> dict:
    return {"dtype": short(dtype), "flops_per_s": matmul_peak(suite.device, dtype),
            "settings": {"matmul": "8192 x 8192, best of 5 x 4" if suite.device.type == "cuda" else "2048 x 2048"}}


# --------------------------------------------------------------------------------- faithful: half precision

def frames_with_vae_check(vae: torch.nn.Module, frames_of) -> tuple[np.ndarray, int]:
    """(the frames, how many VAE decoder outputs held a NaN or an infinity)."""
    bad = []
    hook = vae.decoder.register_forward_hook(lambda m, i, output: bad.append(int(not torch.isfinite(output).all())))
    try:
        frames = np.stack(list(frames_of))
    finally:
        hook.remove()
    return frames, sum(bad)


def half_precision(engine: str, suite: Suite) -> dict:
    """The tiny case in float32, bfloat16 and (for the engines whose originals ran it) float16, on this device."""
    dtypes = [torch.float32, torch.bfloat16] + ([torch.float16] if engine in ("animate-anyone", "aniportrait",
                                                                           "echomimic") else [])
    tiny, suite.tiny = suite.tiny, True  # the tiny cases whatever the suite's size
    try:
        runs = {}
        for dtype in dtypes:
            frames, vae = half_precision_frames(engine, dtype, suite)
            runs[short(dtype)] = frames_with_vae_check(vae, frames)
    finally:
        suite.tiny = tiny
        suite.release()
    reference, reference_bad = runs["fp32"]
    result = {"engine": engine, "tolerance": HALF_TOLERANCE, "fp32_vae_nonfinite": reference_bad, "against_fp32": {}}
    for name, (frames, bad) in runs.items():
        if name == "fp32":
            continue
        difference = np.abs(frames.astype(np.int16) - reference.astype(np.int16))
        mean, p99 = float(difference.mean()), float(np.percentile(difference, 99))
        tolerance = HALF_TOLERANCE[name]
        result["against_fp32"][name] = {"max": int(difference.max()), "mean": mean, "p99": p99,
                                        "vae_nonfinite": bad,
                                        "within": bool(mean <= tolerance["mean"] and p99 <= tolerance["p99"] and bad == 0)}
    return result


# The tiny UNets at 128 px: their coarsest levels 2x2 (at 64 px they are 1x1, where GroupNorm over 2
# values turns rounding into large differences no full-size model has).
FAITHFUL_UNET_SIZE = dict(width=128, height=128)


def half_precision_frames(engine: str, dtype: torch.dtype, suite: Suite):
    """(an iterator of the tiny case's frames, the VAE that decodes them)."""
    if engine in ("animate-anyone", "aniportrait"):
        pipeline = pose2video_pipeline(suite, engine, dtype)
        run = pose2video_run(pipeline, {**POSE2VIDEO["tiny"], **FAITHFUL_UNET_SIZE})
        return (frame for _, frame in run(POSE2VIDEO["tiny"]["steps"])), pipeline.networks.vae
    if engine == "echomimic":
        pipeline = echomimic_pipeline(suite, False, dtype)
        run = echomimic_run(pipeline, {**ECHOMIMIC["tiny"], **FAITHFUL_UNET_SIZE})
        return (frame for _, frame in run(2)), pipeline.networks.vae
    if engine == "wan-animate":
        pipe = wan_animate_pipeline(suite, dtype)
        return wan_animate_run(pipe, WAN_ANIMATE["tiny"])(WAN_ANIMATE["tiny"]["steps"]), pipe.vae
    if engine == "wan-animate-2":
        pipe = wan_animate_2_pipeline(suite, "distilled", dtype)
        return wan_animate_2_run(suite, pipe, "distilled", "832x480")[0](2), pipe.vae
    pipe = wan_vace_pipeline(suite, "tiny", dtype)
    return wan_vace_run(pipe, WAN_VACE["tiny"])(WAN_VACE["tiny"]["steps"]), pipe.vae


# --------------------------------------------------------------------------------------------------- profile

def profile(engine: str, suite: Suite) -> dict:
    """torch.profiler over one run of 1 step (after a warm-up): the operators taking the most device time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    if engine == "animate-anyone":
        run = pose2video_run(pose2video_pipeline(suite, engine, BF16), POSE2VIDEO["tiny" if suite.tiny else "full"])
    else:
        run = wan_animate_2_run(suite, wan_animate_2_pipeline(suite, "distilled", BF16), "distilled", "832x480")[0]
    for _ in run(1):
        pass
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if suite.device.type == "cuda" else [])
    with torch_profile(activities=activities) as profiler:
        for _ in run(1):
            pass
        sync(suite.device)
    syncs = host_syncs(suite.device, run) if suite.device.type == "cuda" else "not counted on the CPU"
    key = "self_device_time_total" if suite.device.type == "cuda" else "self_cpu_time_total"
    events = sorted(profiler.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1
    top = [{"op": e.key, "ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total, "calls": e.count}
           for e in events[:15]]
    return {"engine": engine, "time": key, "total_ms": total / 1e3, "top": top, "host_syncs": syncs}


def host_syncs(device: torch.device, run) -> dict:
    """Where one run of 1 step makes the host wait for the GPU (torch's sync debug mode warns at each):
    the count, and the lines of Marionette's code they come from, most frequent first."""
    import traceback as tb
    import warnings

    sources: dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None):
        ours = [f for f in tb.extract_stack() if "marionette" in f.filename or "diffusers" in f.filename]
        where = f"{ours[-1].filename.split('site-packages/')[-1]}:{ours[-1].lineno}" if ours else filename
        sources[where] = sources.get(where, 0) + 1
    shown = warnings.showwarning
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            for _ in run(1):
                pass
            sync(device)
    finally:
        torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = shown
    return {"count": sum(sources.values()), "sources": sorted(sources.items(), key=lambda kv: -kv[1])[:10]}


# ----------------------------------------------------------------------------------------------------- items

PLAIN = ("none", "dtype")

# In running order: each model built once where items share it (a profile beside its measurement).
# Estimates: seconds on an H100/H200, building (and compiling) included; guesses until a run replaces them.
ITEMS = [
    Item("matmul-peak-bf16", "measure", 5, partial(measure_peak, BF16)),
    Item("matmul-peak-fp16", "measure", 5, partial(measure_peak, FP16)),
    Item("animate-anyone-fp16", "measure", 25, partial(measure_pose2video, "animate-anyone", FP16)),
    Item("animate-anyone-bf16", "measure", 15, partial(measure_pose2video, "animate-anyone", BF16)),
    Item("profile-animate-anyone", "profile", 10, partial(profile, "animate-anyone")),
    Item("aniportrait-fp16", "measure", 25, partial(measure_pose2video, "aniportrait", FP16)),
    Item("aniportrait-bf16", "measure", 15, partial(measure_pose2video, "aniportrait", BF16)),
    Item("echomimic-fp16", "measure", 25, partial(measure_echomimic, False, FP16)),
    Item("echomimic-accelerated-fp16", "measure", 15, partial(measure_echomimic, True, FP16)),
    Item("echomimic-bf16", "measure", 15, partial(measure_echomimic, False, BF16)),
    Item("wan-animate-2-distilled-832x480-bf16", "measure", 90,
         partial(measure_wan_animate_2, "distilled", "832x480", BF16, PLAIN)),
    Item("profile-wan-animate-2-distilled", "profile", 45, partial(profile, "wan-animate-2")),
    Item("wan-animate-2-base-832x480-bf16", "measure", 30,
         partial(measure_wan_animate_2, "base", "832x480", BF16, PLAIN)),
    Item("wan-animate-2-distilled-default-bf16", "measure", 45,
         partial(measure_wan_animate_2, "distilled", "default", BF16, PLAIN)),
    Item("wan-animate-2-base-default-bf16", "measure", 35,
         partial(measure_wan_animate_2, "base", "default", BF16, PLAIN)),
    Item("wan-animate-bf16", "measure", 50, partial(measure_wan_animate, BF16, PLAIN)),
    Item("wan-vace-1.3b-bf16", "measure", 30, partial(measure_wan_vace, "1.3b", BF16, PLAIN)),
    *(Item(f"half-precision-{engine}", "faithful", 5, partial(half_precision, engine))
      for engine in ("animate-anyone", "aniportrait", "echomimic", "wan-animate", "wan-vace")),
    # Compiled on CUDA as the engine runs it, once per dtype.
    Item("half-precision-wan-animate-2", "faithful", 60, partial(half_precision, "wan-animate-2")),
    Item("wan-animate-2-distilled-832x480-float8", "memory", 90,
         partial(measure_wan_animate_2, "distilled", "832x480", BF16, ("none", "float8"))),
    Item("wan-animate-2-distilled-832x480-float8-group", "memory", 100,
         partial(measure_wan_animate_2, "distilled", "832x480", BF16, ("group", "float8"))),
    Item("wan-animate-float8", "memory", 50, partial(measure_wan_animate, BF16, ("none", "float8"))),
    Item("wan-animate-float8-group", "memory", 60, partial(measure_wan_animate, BF16, ("group", "float8"))),
    Item("wan-vace-14b-bf16", "memory", 50, partial(measure_wan_vace, "14b", BF16, PLAIN)),
    Item("wan-vace-14b-float8-group", "memory", 60, partial(measure_wan_vace, "14b", BF16, ("group", "float8"))),
]


# ------------------------------------------------------------------------------------------------- reporting

def markdown(data: dict) -> str:
    lines = ["# GPU suite results", "", f"{data.get('machine', '')}", ""]
    items = data["items"]
    measured = {n: r for n, r in items.items() if r.get("status") == "done" and "seconds_per_frame" in r}
    if measured:
        lines += ["| item | engine | dtype | size, frames | steps | s/frame | frames/s | TFLOP/frame | MFU | "
                  "peak memory GiB | timing |", "|---|---|---|---|---|---:|---:|---:|---:|---:|---|"]
        for name, r in measured.items():
            s = r["settings"]
            place = "" if s.get("offload", "none") == "none" and s.get("transformer_weights", "dtype") == "dtype" \
                else f", offload {s.get('offload')}, weights {s.get('transformer_weights')}"
            lines.append(f"| {name} | {r['engine']} | {r['dtype']} | {s.get('width')}x{s.get('height')}, "
                         f"{r['frames']}{place} | {s.get('steps')} | {r['seconds_per_frame']:.3f} | "
                         f"{r['frames_per_second']:.2f} | {r.get('tflop_per_frame', 0):.3g} | "
                         f"{100 * r.get('mfu', 0):.0f}% | {r['peak_memory_gib']:.1f} | {r['timing']} |")
        lines.append("")
    peaks = {n: r for n, r in items.items() if r.get("status") == "done" and "flops_per_s" in r}
    for name, r in peaks.items():
        lines.append(f"- {name}: {r['flops_per_s'] / 1e12:.1f} TFLOP/s ({r['settings']['matmul']})")
    halves = {n: r for n, r in items.items() if r.get("status") == "done" and "against_fp32" in r}
    if halves:
        stated = "; ".join(f"{k} mean <= {v['mean']} levels, 99th percentile <= {v['p99']}"
                           for k, v in HALF_TOLERANCE.items())
        lines += ["", f"Half precision against float32 (tiny weights; tolerance: {stated}; no NaN):", "",
                  "| engine | dtype | max | mean | p99 | VAE outputs not finite | within |", "|---|---|---:|---:|---:|---:|---|"]
        for r in halves.values():
            for dtype, d in r["against_fp32"].items():
                lines.append(f"| {r['engine']} | {dtype} | {d['max']} | {d['mean']:.3f} | {d['p99']:.1f} | "
                             f"{d['vae_nonfinite']} | {'yes' if d['within'] else 'NO'} |")
    for name, r in items.items():
        if r.get("status") == "done" and "top" in r:
            lines += ["", f"Profile {name} ({r['time']}, one run of 1 step, {r['total_ms']:.0f} ms):", ""]
            lines += [f"- {t['op']}: {t['ms']:.1f} ms ({100 * t['share']:.0f}%, {t['calls']} calls)" for t in r["top"][:10]]
            syncs = r.get("host_syncs")
            if isinstance(syncs, dict):
                lines += ["", f"Host waits for the GPU in that run: {syncs['count']}"
                          + "".join(f"; {where} x{count}" for where, count in syncs["sources"])]
    failed = {n: r for n, r in items.items() if r.get("status") != "done"}
    if failed:
        lines += ["", "Not measured:", ""] + [f"- {n}: {r['status']}: {r.get('error', '')}" for n, r in failed.items()]
    return "\n".join(lines) + "\n"


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
    else:
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} CPU cores, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="the results folder (required but with --list)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes (tests the suite on a CPU)")
    parser.add_argument("--device", default=None, help="default: cuda when present")
    parser.add_argument("--only", default="", help="comma-separated item names or groups")
    parser.add_argument("--budget", type=float, default=None, help="seconds; stop before an item that would not fit")
    parser.add_argument("--retry", action="store_true", help="run failed and crashed items again")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for item in ITEMS:
            print(f"{item.name:48s} {item.group:9s} ~{item.estimate_s:.0f} s")
        return 0
    if args.out is None:
        parser.error("--out is required")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    wanted = {w for w in args.only.split(",") if w}
    unknown = wanted - {i.name for i in ITEMS} - {i.group for i in ITEMS}
    if unknown:
        parser.error(f"unknown item or group: {', '.join(sorted(unknown))} (see --list)")
    suite = Suite(args.out, device, args.tiny)
    suite.data["machine"] = machine(device) + (" (tiny sizes)" if args.tiny else "")
    start = time.perf_counter()
    for item in ITEMS:
        if wanted and item.name not in wanted and item.group not in wanted:
            continue
        previous = suite.data["items"].get(item.name)
        attempts = suite.data["attempts"].get(item.name, 0)
        if previous and (previous["status"] == "done" or not args.retry):
            continue
        if not previous and attempts >= 2 and not args.retry:
            suite.data["items"][item.name] = {"status": "crashed", "error": f"the process died in it {attempts} times"}
            suite.save()
            continue
        if args.budget is not None and time.perf_counter() - start + item.estimate_s > args.budget:
            print(f"budget: stopping before {item.name} (about {item.estimate_s:.0f} s); call again to go on",
                  flush=True)
            break
        suite.data["attempts"][item.name] = attempts + 1
        suite.data["items"].pop(item.name, None)
        suite.save()  # started: a death in the item is seen by the next call
        print(f"start {item.name}", flush=True)
        began = time.perf_counter()
        try:
            result = {"status": "done", **item.run(suite)}
        except Exception as error:  # noqa: BLE001  one item's failure (out of memory, ...) is recorded, not fatal
            traceback.print_exc()
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:500]}
            suite.release()
        result.update(group=item.group, wall_s=time.perf_counter() - began,
                      command=f"python benchmarks/gpu_suite.py --out OUT --only {item.name}"
                      + (" --tiny" if args.tiny else ""))
        suite.data["items"][item.name] = result
        suite.save()
        print(f"done {item.name}: {result['status']} in {result['wall_s']:.1f} s", flush=True)
    suite.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
