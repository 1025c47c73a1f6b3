"""Where a Wan pipeline's parts live and in what form, shared by the three Wan engines: on the GPU
whole, moved there model by model, or streamed there block by block; the transformer's weights in
the compute dtype or stored in float8.

    offload "none"   every part on the device (fastest; the 14B transformer is 33 GB in bfloat16)
            "model"  the parts wait in CPU memory and each moves onto the device while it runs
            "group"  the transformer's blocks stream onto the device one at a time as they run (on
                     CUDA the next block's copy overlaps the current block's compute); the encoders
                     are streamed layer by layer (they run once a shot); the VAE stays on the device
    transformer_weights "dtype"   the transformer in the job's dtype
                        "float8"  stored in float8 (e4m3) and cast to the dtype layer by layer as
                                  it runs (diffusers' layerwise casting): half the memory of
                                  bfloat16; the layers the release keeps precise stay as they are
"""

from __future__ import annotations

import torch

OFFLOAD_MODES = ("none", "model", "group")
TRANSFORMER_WEIGHTS = ("dtype", "float8")

# The settings the Wan engines declare for them.
PLACEMENT_SETTINGS = {
    "offload": {"type": "choice", "default": "none", "choices": list(OFFLOAD_MODES),
                "help": "GPU memory: none (fastest), model (whole models move to the GPU in turn), group (the "
                        "transformer's blocks stream to the GPU: smaller cards, slower)"},
    "transformer_weights": {"type": "choice", "default": "dtype", "choices": list(TRANSFORMER_WEIGHTS),
                            "help": "dtype: the transformer in the job's dtype; float8: stored in float8 and cast "
                                    "layer by layer as it runs (half the memory, pictures close to bfloat16)"},
}


def check_placement(offload: str, transformer_weights: str, device: str | torch.device, error) -> None:
    """`error` (an exception class) naming the setting that cannot be used on this device."""
    if offload not in OFFLOAD_MODES:
        raise error(f"unknown offload {offload!r}; use {', '.join(OFFLOAD_MODES)}")
    if transformer_weights not in TRANSFORMER_WEIGHTS:
        raise error(f"unknown transformer_weights {transformer_weights!r}; use {' or '.join(TRANSFORMER_WEIGHTS)}")
    if offload == "model" and torch.device(device).type == "cpu":
        raise error("offload 'model' moves each model onto an accelerator in turn; on the CPU use none")


def place_pipeline(pipe, device: str | torch.device, dtype: torch.dtype, offload: str = "none",
                   transformer_weights: str = "dtype", move_models_in_turn=None) -> None:
    """Put a loaded pipeline's parts (the transformer in `dtype`) where `offload` says, the
    transformer's weights stored as `transformer_weights` says (checked with check_placement first).
    move_models_in_turn(device): the pipeline's own model offload (default: enable_model_cpu_offload)."""
    device = torch.device(device)
    if transformer_weights == "float8":  # before any move: the float8 copy is what travels
        pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=dtype)
    if offload == "none":
        pipe.to(device)
    elif offload == "model":
        (move_models_in_turn or pipe.enable_model_cpu_offload)(device=device)
    else:
        from diffusers.hooks import apply_group_offloading

        stream = device.type == "cuda"
        pipe.transformer.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                              offload_type="block_level", num_blocks_per_group=1, use_stream=stream)
        for name in ("text_encoder", "image_encoder"):
            if getattr(pipe, name, None) is not None:
                apply_group_offloading(getattr(pipe, name), onload_device=device, offload_type="leaf_level",
                                       use_stream=stream)
        pipe.vae.to(device)


def placement_of(settings: dict) -> tuple[str, str]:
    """(offload, transformer_weights) a job's settings ask for."""
    return settings.get("offload") or "none", settings.get("transformer_weights") or "dtype"
