"""Benchmark: the work of Wan-Animate-2 14B per output frame, base (40 steps, guidance) against distilled
(10 steps, none), at the full size (default 832x480, segments of 81 frames, carry 1).

1. The call plan, measured: the tiny release (tests/backend/tiny_wan_animate_2.py) runs one segment
   through the engine's own segment loop at a small size, with hooks on the transformer recording each
   call's mode (the reference pass over the driving video, "extract"; the denoising passes, "cached")
   and the tokens its blocks see; hooks on every linear and convolution layer of the transformer count
   the FLOPs of its matrix products as they run (PyTorch's FlopCounterMode cannot follow flex attention).
2. The FLOPs of a transformer call as a formula of the released config (dim 5120, 40 layers, FFN 13824,
   512 text and 257 CLIP tokens) and the tokens: the blocks' matrix products, the self-attention as
   its flex block mask keeps it (every generation token attends to the generation tokens and to the
   driving tokens of its frame; the reference pass attends densely), the cross-attention. The formula's
   matrix-product part is checked against the hooks' count on the tiny run (same shapes, tiny widths).
3. FLOPs per output frame = (reference pass + steps x branches x denoising pass) per segment / the
   segment's new frames. The VAE and the encoders are left out (a few percent; the same for both).

    python benchmarks/bench_wan_animate_2.py [--width 832 --height 480 --segment 81]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "backend"))

# transformer/config.json of Wan2.2-Animate-2-14B-Diffusers: diffusers' WanAnimate2Transformer3DModel defaults.
RELEASED = dict(dim=5120, ffn_dim=13824, num_layers=40, text_len=512, text_dim=4096, in_dim=36, out_dim=16,
                freq_dim=256, patch=4)
CLIP_TOKENS = 257
SAMPLING = {"base": (40, 2), "distilled": (10, 1)}  # steps, transformer passes per step (guidance: 2)


def call_flops(config: dict, mode: str, frames: int, hw: int, image_tokens: int, matmul_only: bool = False,
               blocks_only: bool = False) -> float:
    """FLOPs of one transformer call over `frames` latent frames of `hw` tokens each (its 40 blocks and
    the layers around them; `matmul_only`: without the attention products; `blocks_only`: the blocks)."""
    d, ffn, layers, text = config["dim"], config["ffn_dim"], config["num_layers"], config["text_len"]
    tokens = (frames + 1) * hw if mode == "cached" else frames * hw  # cached: the reference image's frame first
    per_layer = (8 * tokens * d * d  # self-attention q, k, v, out
                 + 4 * tokens * d * d + 4 * (text + image_tokens) * d * d  # cross: q, out; k, v of text and image
                 + 4 * tokens * d * ffn)  # feed-forward
    if not matmul_only:
        keys = tokens * tokens + (frames * hw * hw if mode == "cached" else 0)  # the block mask's pairs
        per_layer += 4 * d * keys + 4 * d * tokens * (text + image_tokens)
    if blocks_only:
        return layers * per_layer
    embed = 2 * tokens * config["in_dim"] * config["patch"] * d + 2 * tokens * d * config["out_dim"] * config["patch"]
    text_embed = 2 * text * (config["text_dim"] * d + d * d)
    image_embed = 2 * image_tokens * (1280 * 1280 + 1280 * d)  # the CLIP features' projection
    return layers * per_layer + embed + text_embed + image_embed


def measure_plan(variant: str, width: int, height: int, segment: int) -> dict:
    """One segment of the tiny release through the engine's loop: calls, tokens, counted FLOPs."""
    from marionette.engines.wan_animate_2.pipeline import generate_segments
    from marionette.engines.wan_animate_2.weights import load_pipeline, set_guidance
    from tiny_wan_animate_2 import TINY_TRANSFORMER, save_tiny_release

    folder = save_tiny_release(Path(tempfile.mkdtemp()) / variant, variant)
    pipe = load_pipeline(folder)
    set_guidance(pipe, variant, 3.0 if variant == "base" else 1.0)
    calls = []

    def record(module, args, kwargs):
        latents = kwargs.get("hidden_states", args[0] if args else None)[0]
        image = kwargs.get("encoder_hidden_states_image")
        calls.append({"mode": kwargs["kv_cache_mode"], "latent": list(latents.shape),
                      "text": int(kwargs["encoder_hidden_states"][0].shape[0]),
                      "image": int(image.shape[1]) if image is not None else 0})
    counted = {"blocks": 0, "outside": 0}

    def counter(part):
        def count(module, inputs, output):
            if isinstance(module, torch.nn.Linear):
                counted[part] += 2 * output.numel() * module.in_features
            else:  # the patch embedding: one output per patch, in_channels x kernel volume products each
                counted[part] += 2 * output.numel() * module.in_channels * int(np.prod(module.kernel_size))
        return count
    hooks = [pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)]
    hooks += [m.register_forward_hook(counter("blocks" if name.startswith("blocks.") else "outside"))
              for name, m in pipe.transformer.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    driving = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(segment)]
    try:
        list(generate_segments(pipe, reference, driving, height=height, width=width, segment=segment, carry=1,
                               steps=2))
    finally:
        for hook in hooks:
            hook.remove()
    tiny = dict(RELEASED, dim=TINY_TRANSFORMER["dim"], ffn_dim=TINY_TRANSFORMER["ffn_dim"],
                num_layers=TINY_TRANSFORMER["num_layers"], text_dim=TINY_TRANSFORMER["text_dim"])
    return {"calls": calls, "counted": counted, "tiny_config": tiny}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--segment", type=int, default=81)
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1. The call plan of one segment, on the tiny release at 64x96 (2 steps).
    plans = {}
    for variant in ("base", "distilled"):
        plan = measure_plan(variant, 64, 96, 5)
        modes = [call["mode"] for call in plan["calls"]]
        plans[variant] = plan
        print(f"{variant}: one segment, 2 steps: transformer calls {modes}")
    plan = plans["distilled"]
    extract = next(c for c in plan["calls"] if c["mode"] == "extract")["latent"]
    cached = next(c for c in plan["calls"] if c["mode"] == "cached")["latent"]
    print(f"latents per call (channels, frames, h, w): reference pass {extract}, denoising pass {cached}")

    # The formula's matrix products against FlopCounterMode on the tiny transformer (one segment).
    frames, hw = extract[1], extract[2] * extract[3] // 4
    tiny = dict(plan["tiny_config"], text_len=plan["calls"][0]["text"])
    blocks = sum(call_flops(tiny, c["mode"], frames, hw, c["image"], matmul_only=True, blocks_only=True)
                 for c in plan["calls"])
    whole = sum(call_flops(tiny, c["mode"], frames, hw, c["image"], matmul_only=True) for c in plan["calls"])
    counted = plan["counted"]
    print(f"tiny transformer, one segment, matrix products: in the blocks formula {blocks / 1e6:.3f} MFLOP, "
          f"counted {counted['blocks'] / 1e6:.3f}; around them (embeddings, head) formula "
          f"{(whole - blocks) / 1e6:.3f}, counted {counted['outside'] / 1e6:.3f}")
    image_tokens = CLIP_TOKENS

    # 2-3. The released size.
    latent_frames = (args.segment - 1) // 4 + 1
    hw = (args.height // 16) * (args.width // 16)
    new_frames = args.segment - 1  # carry 1: every segment after the first adds segment - 1 frames
    reference = call_flops(RELEASED, "extract", latent_frames, hw, image_tokens)
    denoise = call_flops(RELEASED, "cached", latent_frames, hw, image_tokens)
    print(f"released transformer at {args.width}x{args.height}, segments of {args.segment} frames "
          f"({latent_frames} latent frames x {hw} tokens): reference pass {reference / 1e15:.2f} PFLOP, "
          f"denoising pass {denoise / 1e15:.2f} PFLOP")
    per_frame = {}
    for variant, (steps, branches) in SAMPLING.items():
        per_segment = reference + steps * branches * denoise
        per_frame[variant] = per_segment / new_frames
        print(f"{variant:9s}: {steps} steps x {branches} pass(es) + 1 reference pass = "
              f"{per_segment / 1e15:.1f} PFLOP per segment, {per_frame[variant] / 1e12:.1f} TFLOP per output frame")
    print(f"distilled needs {per_frame['base'] / per_frame['distilled']:.1f}x less work per frame than base")
    return 0


if __name__ == "__main__":
    sys.exit(main())
