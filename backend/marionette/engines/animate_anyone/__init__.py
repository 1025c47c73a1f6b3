"""AnimateAnyone-family diffusion engines (needs the `diffusion` extra: torch, diffusers, transformers)."""
