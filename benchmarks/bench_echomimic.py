"""Benchmark: the echomimic engine's two costs, in the full-size architecture with random weights.

1. Whisper-tiny audio features (4 blocks of 384, 1500 steps per 30 s segment): seconds per second
   of audio. The encoder runs on whole 30 s segments (the last one padded), so a clip costs its
   number of segments, whatever its length within them.
2. The generation: SD1.5-sized ReferenceNet and denoiser (audio cross-attention of width 384,
   AnimateDiff motion modules), face locator and VAE; seconds per output frame.

Speed does not depend on weight values, so no checkpoint is needed.

    CPU:  python benchmarks/bench_echomimic.py   (128x128, one 12-frame window, 2 steps)
    GPU:  python benchmarks/bench_echomimic.py --device cuda --dtype float16 --width 512 --height 512 \\
              --frames 24 --steps 30
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_animate_anyone import SD15_UNET, matmul_peak, sync, timed_generation
from marionette.engines.echomimic.audio_features import WhisperAudioEncoder
from marionette.engines.echomimic.face_mask import face_box_mask
from marionette.engines.echomimic.models import (EchoMimicNetworks, build_echomimic_denoising_unet,
                                                 build_echomimic_reference_unet, build_face_locator)
from marionette.engines.echomimic.pipeline import CONTEXT_FRAMES, CONTEXT_OVERLAP, EchoMimicPipeline
from marionette.models.unets import ddim_scheduler
from marionette.models.windows import closed_loop_windows

WHISPER_TINY = dict(n_mels=80, n_audio_ctx=1500, n_audio_state=384, n_audio_head=6, n_audio_layer=4)


def whisper_tiny() -> WhisperAudioEncoder:
    encoder = WhisperAudioEncoder(**WHISPER_TINY)
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(0, 0.02)
    return encoder.eval()


def full_size_networks(mode: str, accelerated: bool) -> EchoMimicNetworks:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=(128, 256, 512, 512),
                        layers_per_block=2, latent_channels=4, norm_num_groups=32, sample_size=256)
    encoder = whisper_tiny()
    return EchoMimicNetworks(vae, build_echomimic_reference_unet(SD15_UNET),
                             build_echomimic_denoising_unet(SD15_UNET, encoder.width),
                             build_face_locator(SD15_UNET, mode), encoder, ddim_scheduler(), mode, accelerated)


def bench_whisper(device: torch.device, seconds_list: list[float]) -> None:
    encoder = whisper_tiny().to(device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # as the release runs it
    rng = np.random.default_rng(0)
    encoder.clip_states((rng.standard_normal(16000) * 0.1).astype(np.float32), device, dtype)  # warm-up
    for seconds in seconds_list:
        audio = (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
        sync(device)
        start = time.perf_counter()
        states = encoder.clip_states(audio, device, dtype)
        sync(device)
        took = time.perf_counter() - start
        segments = -(-int(seconds * 100) // 3000)
        print(f"whisper features: {seconds:.0f} s of audio -> {states.shape} in {took:.2f} s = "
              f"{took / seconds:.3f} s per audio second ({segments} segment(s), {took / segments:.2f} s each; "
              f"{dtype})".replace("torch.", ""))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--mode", default="audio", choices=["audio", "pose"])
    parser.add_argument("--accelerated", action="store_true")
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--guidance", type=float, default=None, help="default: the release's (2.5, or 1.0 accelerated)")
    parser.add_argument("--audio-seconds", type=float, nargs="*", default=[10.0, 30.0, 60.0])
    parser.add_argument("--flops", action="store_true", help="also count FLOPs (two more short runs)")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {name} ({device.type}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}), "
          f"torch {torch.__version__}, {args.dtype}")

    bench_whisper(device, args.audio_seconds)

    start = time.perf_counter()
    pipeline = EchoMimicPipeline(full_size_networks(args.mode, args.accelerated), device, dtype)
    build_seconds = time.perf_counter() - start
    nets = pipeline.networks
    parameters = sum(p.numel() for module in (nets.reference_unet, nets.denoising_unet, nets.face_locator, nets.vae)
                     for p in module.parameters())
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
    features = rng.standard_normal((args.frames, 50, nets.audio_encoder.width)).astype(np.float32)
    inputs = dict(face_mask=face_box_mask(args.width, args.height, (args.width * 0.3, args.height * 0.2,
                                                                     args.width * 0.7, args.height * 0.8)))
    if args.mode == "pose":
        inputs = dict(pose_maps=[rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
                                 for _ in range(args.frames)])
    run = dict(steps=args.steps, guidance=args.guidance, seed=1, **inputs)

    total_flops = None
    if args.flops:
        with FlopCounterMode(display=False) as one:
            list(pipeline(reference, features, args.width, args.height, **{**run, "steps": 1}))
        with FlopCounterMode(display=False) as two:
            list(pipeline(reference, features, args.width, args.height, **{**run, "steps": 2}))
        per_step = two.get_total_flops() - one.get_total_flops()
        total_flops = one.get_total_flops() + per_step * (args.steps - 1)

    seconds, first_frame, memory = timed_generation(
        pipeline(reference, features, args.width, args.height, **run), device)
    guidance = run["guidance"] if run["guidance"] is not None else (1.0 if args.accelerated else 2.5)
    windows = len(closed_loop_windows(args.frames, CONTEXT_FRAMES, CONTEXT_OVERLAP))
    print(f"model: full-size architecture (SD1.5 ReferenceNet without cross-attention + SD1.5 denoiser with audio "
          f"cross-attention of 384 and AnimateDiff v2 motion modules + face locator + VAE), "
          f"{parameters / 1e9:.2f} B parameters, random weights (built in {build_seconds:.0f} s)")
    print(f"run: {args.mode} mode{' (accelerated)' if args.accelerated else ''}, {args.width}x{args.height}, "
          f"{args.frames} frames, {windows} window(s) of 12 (overlap 3), {args.steps} DDIM steps, guidance {guidance}"
          f"{' (CFG halves batched)' if guidance > 1 else ''}")
    print(f"time: {seconds:.1f} s = {seconds / args.frames:.2f} s per output frame = {args.frames / seconds:.3f} "
          f"frames/s; first frame after {first_frame:.1f} s (all steps run before any frame is final); {memory}")
    if total_flops is not None:
        peak = matmul_peak(device, dtype)
        print(f"work: {total_flops / 1e12:.2f} TFLOP; achieved {total_flops / seconds / 1e12:.2f} TFLOP/s; "
              f"matmul peak measured {peak / 1e12:.2f} TFLOP/s; MFU {100 * total_flops / seconds / peak:.0f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
