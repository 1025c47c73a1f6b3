"""Random weights that depend only on each tensor's name and shape, so that two different
implementations of one architecture (an original repository and Marionette) get identical values
for every parameter that the released checkpoint layout names the same way, whatever classes build
them and in whatever order. Used by the scripts that make the goldens (in the originals'
environment) and by the tests that compare against them (in the project's)."""

from __future__ import annotations

import zlib
from pathlib import Path

import torch


def seeded_tensor(name: str, shape, seed: int) -> torch.Tensor:
    """A float32 tensor for the parameter or buffer `name`: normalisation statistics as a trained
    model has them, weights scaled by their fan-in (so activations keep their size through deep
    stacks), 1-D scales near 1, biases near 0."""
    generator = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
    shape = tuple(shape)
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "running_var":
        return 0.5 + torch.rand(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if leaf == "running_mean":
        return 0.1 * noise
    if len(shape) >= 2:
        fan_in = 1
        for size in shape[1:]:
            fan_in *= size
        return noise / fan_in ** 0.5
    if leaf == "bias":
        return 0.05 * noise
    return 1.0 + 0.1 * noise  # norm weights, learned scales


def seeded_state(state: dict, seed: int, keep=lambda name: False) -> dict:
    """The state dict with every floating-point tensor replaced by seeded_tensor (integer buffers
    such as BatchNorm's num_batches_tracked, and names `keep` accepts, unchanged)."""
    return {name: value if not value.is_floating_point() or keep(name)
            else seeded_tensor(name, value.shape, seed).to(value.dtype)
            for name, value in state.items()}


def seed_module(module: torch.nn.Module, seed: int, keep=lambda name: False) -> torch.nn.Module:
    module.load_state_dict(seeded_state(module.state_dict(), seed, keep))
    return module


def reseed_checkpoint(path: Path, seed: int) -> list[str]:
    """Rewrite a .pth state dict in place with seeded values; its sorted key names."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    torch.save(seeded_state(state, seed), path)
    return sorted(state)


def file_seed(seed: int, stem: str) -> int:
    """The seed of one checkpoint file of a release that holds several variants of one network
    (EchoMimic's denoising_unet and denoising_unet_acc): same key names, other values."""
    return seed + zlib.crc32(stem.encode()) % 1000
