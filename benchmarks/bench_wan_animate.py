"""Benchmark: Wan2.2-Animate-14B's architecture (diffusers' WanAnimatePipeline parts), random weights.

1. Size: every part of the released model built on PyTorch's meta device (shapes only, no memory):
   parameters per part.
2. Work: FLOPs counted by PyTorch's FlopCounterMode on meta tensors at the full size (default
   832x480, 77-frame segments, 20 steps): one denoising step (a transformer forward; two with
   guidance), each segment's VAE work, the once-per-shot encoders; FLOPs per output frame.
3. CPU: the full-depth, full-width transformer really run on this CPU at a small size. The 14B
   model does not fit in this machine's memory, so its 40 blocks (and 8 face adapters) share one
   block's weights: the same computation, one block's memory (speed does not depend on weight
   values). Measures seconds per denoising step and per output frame at that size, the FLOP/s
   achieved, and what the full size would take at that rate.

    python benchmarks/bench_wan_animate.py                       (counts + a 32x32x5 CPU run, 1 step)
    python benchmarks/bench_wan_animate.py --skip-cpu --width 1280 --height 720
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

# transformer/config.json of Wan2.2-Animate-14B-Diffusers (as diffusers' conversion script writes it).
TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=36, latent_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=1280, added_kv_proj_dim=5120, rope_max_seq_len=1024,
    pos_embed_seq_len=None, motion_encoder_size=512, motion_style_dim=512, motion_dim=20, motion_encoder_dim=512,
    face_encoder_hidden_dim=1024, face_encoder_num_heads=4, inject_face_latents_blocks=5, motion_encoder_batch_size=8)
# umT5-XXL's encoder and OpenCLIP ViT-H/14's vision tower, as transformers configures them.
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, relative_attention_max_distance=128)
CLIP_VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                  image_size=224, patch_size=14, hidden_act="gelu")
TEXT_TOKENS = 512
IMAGE_TOKENS = (224 // 14) ** 2 + 1


def latent_frames(frames: int) -> int:
    return (frames - 1) // 4 + 1


def transformer_inputs(width: int, height: int, frames: int, device: str, dtype: torch.dtype,
                       config: dict = TRANSFORMER, image_tokens: int = IMAGE_TOKENS) -> dict:
    """The tensors the pipeline hands a transformer of `config` for one segment of `frames` frames."""
    t, h, w = latent_frames(frames), height // 8, width // 8
    latent, face = config["latent_channels"], config["motion_encoder_size"]
    def make(*shape):
        if device == "meta":
            return torch.empty(*shape, device=device, dtype=dtype)
        return torch.randn(*shape, device=device, dtype=dtype)
    return dict(hidden_states=make(1, config["in_channels"], t + 1, h, w), timestep=torch.full((1,), 500, device=device),
                encoder_hidden_states=make(1, TEXT_TOKENS, config["text_dim"]),
                encoder_hidden_states_image=make(1, image_tokens, config["image_dim"]),
                pose_hidden_states=make(1, latent, t, h, w), face_pixel_values=make(1, 3, frames, face, face),
                return_dict=False)


def flops(function) -> float:
    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def count_on_meta(width: int, height: int, segment: int, transformer: dict | None = None, vae: dict | None = None,
                  image_tokens: int = IMAGE_TOKENS) -> tuple[dict, dict]:
    """Parameters per part, and FLOPs of the pipeline's pieces at this size (meta tensors); the
    transformer and VAE of the release, or of the configs given (a pipeline's own)."""
    from diffusers import AutoencoderKLWan, WanAnimateTransformer3DModel
    from transformers import CLIPVisionConfig, CLIPVisionModel, UMT5Config, UMT5EncoderModel

    transformer = {**TRANSFORMER, **(transformer or {})}
    with torch.device("meta"):
        parts = {"transformer": WanAnimateTransformer3DModel.from_config(transformer),
                 "vae": AutoencoderKLWan.from_config(vae or {}),
                 "text_encoder": UMT5EncoderModel(UMT5Config(**UMT5_XXL)),
                 "image_encoder": CLIPVisionModel(CLIPVisionConfig(**CLIP_VIT_H))}
    parameters = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
    vae = parts["vae"]
    meta = lambda *shape, dtype=torch.float32: torch.empty(*shape, device="meta", dtype=dtype)  # noqa: E731
    work = {
        "step": flops(lambda: parts["transformer"](**transformer_inputs(width, height, segment, "meta",
                                                                        torch.float32, transformer, image_tokens))),
        "vae_encode_segment": flops(lambda: vae.encode(meta(1, 3, segment, height, width)).latent_dist.mode()),
        "vae_decode_segment": flops(lambda: vae.decode(meta(1, vae.config.z_dim, latent_frames(segment), height // 8,
                                                            width // 8)).sample),
        "vae_encode_reference": flops(lambda: vae.encode(meta(1, 3, 1, height, width)).latent_dist.mode()),
        # Without a mask: transformers builds the mask with .item(), which meta tensors cannot answer;
        # the work is the same.
        "text_encoder": flops(lambda: parts["text_encoder"](meta(1, TEXT_TOKENS, dtype=torch.long))),
        "image_encoder": flops(lambda: parts["image_encoder"](meta(1, 3, 224, 224), output_hidden_states=True)),
    }
    return parameters, work


def shared_depth_transformer(dtype: torch.dtype):
    """The full transformer on the CPU with every block (and face adapter) sharing one's weights."""
    from diffusers import WanAnimateTransformer3DModel

    layers, every = TRANSFORMER["num_layers"], TRANSFORMER["inject_face_latents_blocks"]
    model = WanAnimateTransformer3DModel(**{**TRANSFORMER, "num_layers": 1, "inject_face_latents_blocks": 1})
    model.blocks = torch.nn.ModuleList([model.blocks[0]] * layers)
    model.face_adapter = torch.nn.ModuleList([model.face_adapter[0]] * (layers // every))
    model.register_to_config(num_layers=layers, inject_face_latents_blocks=every)
    keep = model._keep_in_fp32_modules  # as from_pretrained(dtype=...) leaves them
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if not any(part in name for part in keep):
                parameter.data = parameter.data.to(dtype)
    return model.eval()


def matmul_peak(dtype: torch.dtype, size: int = 2048) -> float:
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * size ** 3 / (time.perf_counter() - start))
    return best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--segment", type=int, default=77, help="frames per segment (4n + 1)")
    parser.add_argument("--carry", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=1.0)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--cpu-width", type=int, default=32)
    parser.add_argument("--cpu-height", type=int, default=32)
    parser.add_argument("--cpu-segment", type=int, default=5)
    parser.add_argument("--cpu-dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    passes = 2 if args.guidance > 1 else 1

    start = time.perf_counter()
    parameters, work = count_on_meta(args.width, args.height, args.segment)
    counted_in = time.perf_counter() - start
    new_frames = args.segment - args.carry
    per_segment = (args.steps * passes * work["step"] + 2 * work["vae_encode_segment"]  # pose + conditioning
                   + work["vae_decode_segment"])
    per_shot = passes * work["text_encoder"] + work["image_encoder"] + work["vae_encode_reference"]
    print(f"torch {torch.__version__}; counted on the meta device in {counted_in:.1f} s")
    print("parameters: " + ", ".join(f"{name} {count / 1e9:.2f} B" for name, count in parameters.items())
          + f"; total {sum(parameters.values()) / 1e9:.2f} B")
    print(f"work at {args.width}x{args.height}, segments of {args.segment} frames (carry {args.carry}), "
          f"{args.steps} steps, guidance {args.guidance}:")
    print(f"  denoising step (transformer forward x{passes}): {passes * work['step'] / 1e12:.0f} TFLOP")
    print(f"  per segment: VAE encode pose {work['vae_encode_segment'] / 1e12:.0f} + conditioning "
          f"{work['vae_encode_segment'] / 1e12:.0f} + decode {work['vae_decode_segment'] / 1e12:.0f} TFLOP; "
          f"segment total {per_segment / 1e15:.1f} PFLOP")
    print(f"  once per shot: text encoder {work['text_encoder'] / 1e12:.1f} x{passes}, image encoder "
          f"{work['image_encoder'] / 1e12:.2f}, reference encode {work['vae_encode_reference'] / 1e12:.1f} TFLOP "
          f"(together {per_shot / 1e12:.1f} TFLOP)")
    print(f"  per output frame ({new_frames} new frames a segment): {per_segment / new_frames / 1e12:.0f} TFLOP")
    if args.skip_cpu:
        return 0

    dtype = getattr(torch, args.cpu_dtype)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = shared_depth_transformer(dtype)
    built = time.perf_counter() - start
    inputs = transformer_inputs(args.cpu_width, args.cpu_height, args.cpu_segment, "cpu", dtype)
    _, small_work = count_on_meta(args.cpu_width, args.cpu_height, args.cpu_segment)
    with torch.no_grad():
        model(**inputs)  # warm-up
        times = []
        for _ in range(2):
            start = time.perf_counter()
            model(**inputs)
            times.append(time.perf_counter() - start)
    step = min(times) * passes
    peak = matmul_peak(dtype)
    rate = small_work["step"] / min(times)
    name = platform.processor() or platform.machine()
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cpu_segment_new = args.cpu_segment - args.carry
    print(f"CPU: {name}, {os.cpu_count()} cores, {args.cpu_dtype}; full-depth transformer with shared block weights "
          f"(built in {built:.0f} s, peak process memory {memory:.1f} GiB)")
    print(f"  {args.cpu_width}x{args.cpu_height}, segment of {args.cpu_segment} frames: {step:.1f} s per denoising "
          f"step ({small_work['step'] / 1e12:.2f} TFLOP, {rate / 1e9:.0f} GFLOP/s; matmul peak {peak / 1e9:.0f} "
          f"GFLOP/s); {args.steps} steps = {args.steps * step / cpu_segment_new:.0f} s per output frame "
          f"(transformer only)")
    full_frame = per_segment / new_frames
    print(f"  at {args.width}x{args.height} and that rate: {passes * work['step'] / rate / 3600:.1f} h per step, "
          f"{full_frame / rate / 3600:.1f} h per output frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
