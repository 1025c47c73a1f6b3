"""Benchmark: the animate-anyone engine in its full-size architecture with random weights.

Speed does not depend on weight values, so no checkpoint is needed. Reports seconds per output
frame, peak memory, and model-FLOPs utilisation (FLOPs the networks need, counted by PyTorch's
FlopCounterMode, over the time taken, against a matmul peak measured in the same run).

    GPU:  python benchmarks/bench_animate_anyone.py --device cuda --dtype bfloat16 \
              --width 512 --height 768 --frames 24 --steps 25
    CPU (make bench): python benchmarks/bench_animate_anyone.py   (small frames and few steps)
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from marionette.engines.animate_anyone.models import Networks
from marionette.engines.animate_anyone.pipeline import AnimateAnyonePipeline
from marionette.models.unets import build_denoising_unet, build_pose_guider, build_reference_unet, ddim_scheduler
from marionette.models.windows import closed_loop_windows

# Stable Diffusion 1.5's UNet config (the release reads it from stable-diffusion-v1-5/unet/config.json).
SD15_UNET = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": [320, 640, 1280, 1280], "attention_head_dim": 8, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "norm_num_groups": 32,
}


def full_size_networks() -> Networks:
    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(  # ViT-L/14, projection 768
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=224, patch_size=14, projection_dim=768))
    return Networks(vae, encoder, build_reference_unet(SD15_UNET), build_denoising_unet(SD15_UNET),
                    build_pose_guider(SD15_UNET), ddim_scheduler())


def matmul_peak(device: torch.device, dtype: torch.dtype) -> float:
    """Best FLOP/s of a large square matmul on this device and dtype."""
    size = 8192 if device.type == "cuda" else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = 0.0
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        sync(device)
        best = max(best, 4 * 2 * size ** 3 / (time.perf_counter() - start))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_generation(frames, device: torch.device) -> tuple[float, float | None, str]:
    """Run a generation (an iterator of frames) to its end: (seconds, seconds to the first frame,
    peak memory as text: GPU memory on CUDA, the process's otherwise)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    start = time.perf_counter()
    first_frame = None
    for _frame in frames:
        if first_frame is None:
            first_frame = time.perf_counter() - start
    sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        return seconds, first_frame, f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    return seconds, first_frame, f"peak process memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--window", type=int, default=24)
    parser.add_argument("--overlap", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--guidance", type=float, default=3.5)
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)

    start = time.perf_counter()
    pipeline = AnimateAnyonePipeline(full_size_networks(), device, dtype)
    build_seconds = time.perf_counter() - start
    parameters = sum(p.numel() for module in (pipeline.networks.reference_unet, pipeline.networks.denoising_unet,
                                              pipeline.networks.pose_guider, pipeline.networks.vae,
                                              pipeline.networks.image_encoder) for p in module.parameters())
    peak = matmul_peak(device, dtype)

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    maps = [rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8) for _ in range(args.frames)]
    run = dict(steps=args.steps, guidance=args.guidance, seed=1, window=args.window, overlap=args.overlap)

    # FLOPs of the whole generation, counted on a short run of the same shapes (1 step).
    with FlopCounterMode(display=False) as counter:
        list(pipeline(reference, maps, args.width, args.height, **{**run, "steps": 1}))
    one_step_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter_two:
        list(pipeline(reference, maps, args.width, args.height, **{**run, "steps": 2}))
    per_step = counter_two.get_total_flops() - one_step_flops
    total_flops = one_step_flops + per_step * (args.steps - 1)

    seconds, first_frame, memory = timed_generation(pipeline(reference, maps, args.width, args.height, **run),
                                                    device)
    windows = len(closed_loop_windows(args.frames, args.window, args.overlap))
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {name} ({device.type}, {os.cpu_count()} CPU cores), torch {torch.__version__}, {args.dtype}")
    print(f"model: full-size architecture (SD1.5 UNet x2 + AnimateDiff v2 motion modules + pose guider + VAE + "
          f"CLIP ViT-L/14), {parameters / 1e9:.2f} B parameters, random weights (built in {build_seconds:.0f} s)")
    print(f"run: {args.width}x{args.height}, {args.frames} frames, {windows} window(s) of {args.window} "
          f"(overlap {args.overlap}), {args.steps} DDIM steps, guidance {args.guidance} (CFG halves batched)")
    print(f"time: {seconds:.1f} s = {seconds / args.frames:.2f} s per output frame = "
          f"{args.frames / seconds:.2f} frames/s; first frame after {first_frame:.1f} s; {memory}")
    print(f"work: {total_flops / 1e12:.1f} TFLOP; achieved {total_flops / seconds / 1e12:.2f} TFLOP/s; "
          f"matmul peak measured {peak / 1e12:.2f} TFLOP/s; MFU {100 * total_flops / seconds / peak:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
