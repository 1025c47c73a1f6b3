"""Reference attention as a pair of diffusers attention processors.

The ReferenceNet runs once per generation; the writer processor on each of its self-attentions
(attn1 of every BasicTransformerBlock) keeps that layer's input, norm1(x), in a bank. In the
denoiser, the reader processor on the self-attention at the same module path attends with keys and
values = [own tokens, bank tokens], using the denoiser's own projections, as the reference
implementation does. For classifier-free guidance, the unconditional half of the batch attends to
its own tokens only: here both halves run in one call, the bank tokens masked out for the
unconditional half, which gives the same result.

Speed without changing the result: the bank's keys and values are projected once per generation
(they depend only on the bank and the denoiser's weights), not per step and frame; set
`ReferenceBank.cache_projections = False` for the literal per-call path.

EchoMimic's variant of the same pair: its release keeps the bank in float16 whatever the model
dtype (`ReferenceBank.storage_dtype`), and the denoiser's cross-attentions, which attend to audio
features instead of an image embedding, add three times their output (`ScaledCrossAttention`,
installed with `install(..., cross_attention_scale=3.0)`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class ReferenceBank:
    """Per-layer reference features shared by the writers and readers of one generation."""

    def __init__(self):
        self.features: dict[str, torch.Tensor] = {}  # layer path -> (1, tokens, channels)
        self.projected: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.cache_projections = True
        self.unconditional = 0  # leading batch entries that attend without the bank (CFG)
        self.enabled = True
        self.storage_dtype: torch.dtype | None = None  # None: kept as the ReferenceNet computes it

    def clear(self) -> None:
        self.features.clear()
        self.projected.clear()


class ReferenceWriter(AttnProcessor2_0):
    """ReferenceNet side: remember the attention input, then attend as usual."""

    def __init__(self, bank: ReferenceBank, path: str):
        super().__init__()
        self.bank, self.path = bank, path

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        features = hidden_states.detach()
        if self.bank.storage_dtype is not None:
            features = features.to(self.bank.storage_dtype)
        self.bank.features[self.path] = features
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class ReferenceReader(AttnProcessor2_0):
    """Denoiser side: self-attention whose keys and values also cover the reference tokens."""

    def __init__(self, bank: ReferenceBank, path: str):
        super().__init__()
        self.bank, self.path = bank, path

    def _bank_keys_values(self, attn: Attention) -> tuple[torch.Tensor, torch.Tensor]:
        if self.bank.cache_projections and self.path in self.bank.projected:
            return self.bank.projected[self.path]
        features = self.bank.features[self.path].to(attn.to_k.weight.dtype)  # no-op unless stored in another dtype
        projected = (attn.to_k(features), attn.to_v(features))
        if self.bank.cache_projections:
            self.bank.projected[self.path] = projected
        return projected

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if not self.bank.enabled or self.path not in self.bank.features or encoder_hidden_states is not None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        batch, tokens, _ = hidden_states.shape
        heads = attn.heads
        query = attn.to_q(hidden_states)
        key_self, value_self = attn.to_k(hidden_states), attn.to_v(hidden_states)
        key_bank, value_bank = self._bank_keys_values(attn)
        bank_tokens = key_bank.shape[1]
        key = torch.cat([key_self, key_bank.expand(batch, -1, -1)], dim=1)
        value = torch.cat([value_self, value_bank.expand(batch, -1, -1)], dim=1)
        mask = None
        if self.bank.unconditional:
            mask = torch.ones(batch, 1, 1, tokens + bank_tokens, dtype=torch.bool, device=hidden_states.device)
            mask[: self.bank.unconditional, :, :, tokens:] = False

        def split_heads(x):
            return x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split_heads(query), split_heads(key), split_heads(value),
                                             attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            raise NotImplementedError("reference attention expects no residual inside the attention")
        return out / attn.rescale_output_factor


class ScaledCrossAttention(AttnProcessor2_0):
    """Cross-attention whose output is multiplied by a fixed factor before the block adds it to its
    input: EchoMimic's audio attention, h = scale * attn2(norm2(h), audio features) + h."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb) * self.scale


def self_attention_paths(model: torch.nn.Module) -> list[str]:
    """Processor names of the spatial self-attentions (attn1 of every BasicTransformerBlock)."""
    return [name for name in model.attn_processors if name.endswith("attn1.processor")
            and "motion_modules" not in name]


def cross_attention_paths(model: torch.nn.Module) -> list[str]:
    """Processor names of the spatial cross-attentions (attn2 of every BasicTransformerBlock; the
    motion modules' attn2 are temporal self-attentions and are not among them)."""
    return [name for name in model.attn_processors if name.endswith("attn2.processor")
            and "motion_modules" not in name]


def install(reference_unet, denoising_unet, bank: ReferenceBank, cross_attention_scale: float | None = None) -> None:
    """Writers on the ReferenceNet, readers on the denoiser, paired by module path. With
    cross_attention_scale, the denoiser's spatial cross-attentions scale their output by it."""
    writers = self_attention_paths(reference_unet)
    readers = set(self_attention_paths(denoising_unet))
    missing = [path for path in writers if path not in readers]
    if missing:
        raise ValueError(f"ReferenceNet and denoiser differ: no denoiser attention at {missing[:3]}")
    scaled = set(cross_attention_paths(denoising_unet)) if cross_attention_scale is not None else set()

    def denoiser_processor(name: str):
        if name in readers:
            return ReferenceReader(bank, name)
        if name in scaled:
            return ScaledCrossAttention(cross_attention_scale)
        return AttnProcessor2_0()
    reference_unet.set_attn_processor({name: ReferenceWriter(bank, name) if name in writers else AttnProcessor2_0()
                                       for name in reference_unet.attn_processors})
    denoising_unet.set_attn_processor({name: denoiser_processor(name) for name in denoising_unet.attn_processors})
