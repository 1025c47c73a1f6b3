"""Benchmark: the work of Wan2.1-VACE (1.3B and 14B) per output frame at the full size (default 832x480,
clips of 81 frames, 25 steps with classifier-free guidance), from a formula checked by counting.

1. The tiny release (tests/backend/tiny_wan_vace.py) runs one clip through the engine's own clip loop
   at a small size; hooks on the transformer record each call's tokens, and hooks on every linear and
   convolution layer count the FLOPs of its matrix products as they run (main blocks, VACE blocks, and
   the layers around them separately).
2. The FLOPs of a transformer call as a formula of the config and the tokens: per main block the
   self-attention's q, k, v, out and its products, the cross-attention (q, out; k, v of the 512 text
   tokens; its products), the feed-forward; each VACE block the same plus its output projection (and
   the first its input projection) over the control tokens; the patch embeddings, the condition
   embedder and the head. Its matrix-product part is checked against the counted FLOPs of the tiny run.
3. FLOPs per output frame = steps x 2 passes (guidance) per clip / the clip's frames. The VAE and the
   text encoder are left out (a few percent).

    python benchmarks/bench_wan_vace.py [--width 832 --height 480 --clip 81 --steps 25]
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

TEXT_TOKENS = 512
# transformer/config.json of the releases (WanVACETransformer3DModel).
RELEASED = {
    "1.3B": dict(dim=1536, ffn_dim=8960, num_layers=30, vace_layers=15, text_dim=4096, freq_dim=256),
    "14B": dict(dim=5120, ffn_dim=13824, num_layers=40, vace_layers=8, text_dim=4096, freq_dim=256),
}
PATCH = 4  # 1 x 2 x 2
IN_CHANNELS, VACE_IN_CHANNELS, OUT_CHANNELS = 16, 96, 16


def call_flops(config: dict, tokens: int, text: int = TEXT_TOKENS, matmul_only: bool = False) -> dict:
    """FLOPs of one transformer call over `tokens` video tokens (and as many control tokens), by part."""
    d, ffn = config["dim"], config["ffn_dim"]
    block = 8 * tokens * d * d + 4 * tokens * d * d + 4 * text * d * d + 4 * tokens * d * ffn
    if not matmul_only:
        block += 4 * d * tokens * tokens + 4 * d * tokens * text  # attention's products, self and cross
    vace = config["vace_layers"] * (block + 2 * tokens * d * d) + 2 * tokens * d * d  # + proj_out each, proj_in once
    outside = (2 * tokens * IN_CHANNELS * PATCH * d + 2 * tokens * VACE_IN_CHANNELS * PATCH * d  # patch embeddings
               + 2 * tokens * d * OUT_CHANNELS * PATCH  # the head
               + 2 * text * (config["text_dim"] * d + d * d)  # the text embedder
               + 2 * (config["freq_dim"] * d + d * d + d * 6 * d))  # the timestep embedder and projection
    return {"blocks": config["num_layers"] * block, "vace_blocks": vace, "outside": outside}


def measure(width: int, height: int, frames: int) -> dict:
    """One clip of the tiny release through the engine's loop (2 steps, guidance): calls and counted FLOPs."""
    from marionette.engines.wan_vace.pipeline import generate_clips
    from marionette.engines.wan_vace.weights import load_pipeline
    from tiny_wan_vace import TINY_TRANSFORMER, save_tiny_release

    pipe = load_pipeline(save_tiny_release(Path(tempfile.mkdtemp()) / "vace"))
    calls = []

    def record(module, args, kwargs):
        latents = kwargs["hidden_states"]
        calls.append({"tokens": int(np.prod(latents.shape[2:])) // PATCH,
                      "text": int(kwargs["encoder_hidden_states"].shape[1])})
    counted = {"blocks": 0, "vace_blocks": 0, "outside": 0}

    def counter(part):
        def count(module, inputs, output):
            if isinstance(module, torch.nn.Linear):
                counted[part] += 2 * output.numel() * module.in_features
            else:  # a patch embedding: one output per patch, in_channels x kernel volume products each
                counted[part] += 2 * output.numel() * module.in_channels * int(np.prod(module.kernel_size))
        return count

    def part_of(name: str) -> str:
        return "vace_blocks" if name.startswith("vace_blocks.") else "blocks" if name.startswith("blocks.") \
            else "outside"
    hooks = [pipe.transformer.register_forward_pre_hook(record, with_kwargs=True)]
    hooks += [m.register_forward_hook(counter(part_of(name))) for name, m in pipe.transformer.named_modules()
              if isinstance(m, (torch.nn.Linear, torch.nn.Conv3d))]
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    control = [rng.integers(0, 255, (height, width, 3), dtype=np.uint8) for _ in range(frames)]
    try:
        list(generate_clips(pipe, reference, control, height=height, width=width, prompt="a person dancing",
                            steps=2, guidance=5.0))
    finally:
        for hook in hooks:
            hook.remove()
    tiny = dict(dim=TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"],
                ffn_dim=TINY_TRANSFORMER["ffn_dim"], num_layers=TINY_TRANSFORMER["num_layers"],
                vace_layers=len(TINY_TRANSFORMER["vace_layers"]), text_dim=TINY_TRANSFORMER["text_dim"],
                freq_dim=TINY_TRANSFORMER["freq_dim"])
    return {"calls": calls, "counted": counted, "tiny": tiny}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--clip", type=int, default=81)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1-2. One clip of the tiny release at 48x32, 9 frames, 2 steps with guidance: the formula against the count.
    run = measure(48, 32, 9)
    print(f"tiny release, one clip of 9 frames at 48x32, 2 steps with guidance: {len(run['calls'])} transformer "
          f"calls of {run['calls'][0]['tokens']} tokens (and as many control tokens), {run['calls'][0]['text']} "
          f"text tokens")
    formula = {part: 0 for part in run["counted"]}
    for call in run["calls"]:
        for part, value in call_flops(run["tiny"], call["tokens"], call["text"], matmul_only=True).items():
            formula[part] += value
    for part, counted in run["counted"].items():
        print(f"  matrix products, {part}: formula {formula[part] / 1e6:.3f} MFLOP, counted {counted / 1e6:.3f}")

    # 3. The released sizes.
    latent_frames = (args.clip - 1) // 4 + 1 + 1  # the clip's latent frames and the reference image's
    tokens = latent_frames * (args.height // 16) * (args.width // 16)
    for name, config in RELEASED.items():
        parts = call_flops(config, tokens)
        per_pass = sum(parts.values())
        per_clip = per_pass * args.steps * 2
        attention = config["num_layers"] + config["vace_layers"]
        attention *= 4 * config["dim"] * tokens * tokens + 4 * config["dim"] * tokens * TEXT_TOKENS
        print(f"{name}: {tokens} tokens a pass, {per_pass / 1e15:.3f} PFLOP a pass ({attention / per_pass:.0%} "
              f"attention), {per_clip / 1e15:.1f} PFLOP a clip of {args.clip} frames, "
              f"{per_clip / args.clip / 1e12:.0f} TFLOP per output frame "
              f"({per_clip / (args.clip - 5) / 1e12:.0f} in a continuing clip, carry 5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
