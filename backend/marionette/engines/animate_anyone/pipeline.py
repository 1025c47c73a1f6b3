"""The AnimateAnyone generation loop: reference image + control maps -> frames, streamed.

Semantics of the reference implementation (MooreThreads/Moore-AnimateAnyone, long-video pipeline):
CLIP image embedding of the reference (224 px) as the conditioning of both UNets; the ReferenceNet
once, at timestep 0, on the VAE latent mean of the reference; initial noise ONE draw
torch.randn((1, 4, frames, H/8, W/8)) from a CPU generator seeded with the seed, times
init_noise_sigma; DDIM (eta 0); at every step the denoiser runs over overlapping windows and its
predictions are averaged per frame; classifier-free guidance with a zero image embedding and no
reference bank for the unconditional half, pose features kept.

Windows as the reference implementation's "uniform" context schedule makes them: `window` frames
starting every window - overlap frames, the last ones wrapping past the end of the clip to its
start (a shot's last frames shape its first ones, as in the original), the same at every step. One
difference, of timing only: a frame is decoded and emitted during the last step as soon as the last
window holding it is done, instead of after the whole clip (so the first frames of a wrapping clip
come last).

AniPortrait (Zejun-Yang/AniPortrait, scripts/vid2vid.py and its long-video pipeline) runs the same
loop but feeds its own pose guider differently, and so does this with guider="aniportrait": the
landmark maps reach the guider as 2 * v - 1 for each uint8 value v, channels as drawn; the guider
runs once per window on that window's frames, doubled for guidance as the original doubles them,
and its BatchNorm layers normalise with the statistics of that batch. The original also passes the
reference's landmark map, which has no effect on the output; it is not used here.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
try:  # the PIL processor: the default one wants torchvision, which the project does not install
    from transformers import CLIPImageProcessorPil as CLIPImageProcessor
except ImportError:
    from transformers import CLIPImageProcessor

from ...images import resize_to
from ...models.denoising import AddedFeatures, decode_to_images, encode_reference, guide
from ...models.reference_attention import ReferenceBank, install
from ...models.unets import LATENT_SCALE
from ...models.windows import closed_loop_windows
from .models import GUIDERS, Networks

CLIP_SIZE = 224
DECODE_BATCH = 8


def aniportrait_controls(control_maps: list[np.ndarray], width: int, height: int) -> torch.Tensor:
    """AniPortrait's guider input as its released inference builds it: (frames, 3, height, width)
    float32, 2 * v - 1 for each uint8 value v (0..255), channels in the maps' own order (R, G, B of
    an `aniportrait-face` map). Its scripts hand numpy uint8 maps to diffusers' VaeImageProcessor,
    which maps [0, 1] to [-1, 1] but does not divide numpy input by 255 first."""
    maps = [resize_to(np.ascontiguousarray(m[..., :3]), width, height) for m in control_maps]
    # Contiguous (frames, channels, ...) memory, as the original's tensors are: on a channels-last
    # tensor PyTorch's BatchNorm computes the batch variance another way, and on values up to 509
    # the guider's first level then differs from the original's by 0.4%.
    return torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).contiguous().float() * 2 - 1


class AnimateAnyonePipeline:
    """`guider`: whose pose guider the networks hold, which says how it is fed: "animate-anyone"
    (Moore: RGB maps in [0, 1], each frame on its own) or "aniportrait" (see the module docstring)."""

    def __init__(self, networks: Networks, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 guider: str = "animate-anyone"):
        if guider not in GUIDERS:
            raise ValueError(f"unknown pose guider '{guider}'; one of {', '.join(GUIDERS)}")
        self.guider = guider
        self.networks = networks.to(torch.device(device), dtype)
        self.device, self.dtype = torch.device(device), dtype
        self.bank = ReferenceBank()
        # The reference implementation hands the bank to the denoiser in float16 whatever the model's
        # dtype (its reader's update() casts it); the rounding shows in the frames, so keep it.
        self.bank.storage_dtype = torch.float16
        install(networks.reference_unet, networks.denoising_unet, self.bank)
        # Pose features join the denoiser through hooks: the first after its conv_in, any further
        # ones (AniPortrait's guider) after its down blocks, in order.
        self._pose_features = AddedFeatures(networks.denoising_unet)
        self.reference_processor = VaeImageProcessor(vae_scale_factor=8)  # [-1, 1]
        self.control_processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
        self.clip_processor = CLIPImageProcessor()

    def _guide(self, controls: torch.Tensor) -> list[torch.Tensor]:
        """The guider's feature maps for a batch of control maps, as a list (finest first)."""
        features = self.networks.pose_guider(controls.to(self.device, self.dtype))
        return list(features) if isinstance(features, (list, tuple)) else [features]

    def _controls(self, control_maps: list[np.ndarray], width: int, height: int) -> torch.Tensor:
        """The guider's input for every frame, (frames, 3, height, width)."""
        if self.guider == "aniportrait":
            return aniportrait_controls(control_maps, width, height)
        return torch.cat([self.control_processor.preprocess(Image.fromarray(np.ascontiguousarray(m[..., :3])),
                                                            height=height, width=width) for m in control_maps])

    def _window_features(self, controls: torch.Tensor, windows: list[list[int]],
                         guided: bool) -> Callable[[int], list[torch.Tensor]]:
        """window number -> the guider's features of that window's frames (one list entry per level,
        each (window frames, C, h, w)).

        Moore's guider treats every frame on its own: all frames once, in chunks. AniPortrait's
        normalises with the statistics of its batch, which in the original is the window's frames
        repeated for the two guidance halves (before the guider, so identical halves: the same
        statistics as one); a frame thus has other features in each window holding it. A window's
        features are the same at every step, so each is computed once.
        """
        if self.guider != "aniportrait":
            chunks = [self._guide(chunk) for chunk in controls.split(16)]
            every_frame = [torch.cat(level) for level in zip(*chunks)]
            return lambda w: [level[windows[w]] for level in every_frame]
        computed: dict[int, list[torch.Tensor]] = {}

        def features(w: int) -> list[torch.Tensor]:
            if w not in computed:
                frames = controls[windows[w]]
                batch = torch.cat([frames, frames]) if guided else frames
                computed[w] = [level[:len(frames)].clone() for level in self._guide(batch)]
            return computed[w]
        return features

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, control_maps: list[np.ndarray], width: int, height: int,
                 steps: int = 25, guidance: float = 3.5, seed: int = 42, window: int = 24, overlap: int = 4,
                 stop: threading.Event | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, (H, W, 3) uint8 RGB), each as soon as it is final.

        reference: (H', W', 3) uint8 RGB; control_maps: one (H', W', 3) uint8 RGB map per frame.
        """
        nets, device, dtype = self.networks, self.device, self.dtype
        frames = len(control_maps)
        guided = guidance > 1.0
        reference_image = Image.fromarray(np.ascontiguousarray(reference[..., :3]))

        clip_input = self.clip_processor.preprocess(reference_image.resize((CLIP_SIZE, CLIP_SIZE)),
                                                    return_tensors="pt").pixel_values
        embeds = nets.image_encoder(clip_input.to(device, dtype)).image_embeds.unsqueeze(1)  # (1, 1, C)

        reference_latents = encode_reference(nets.vae, self.reference_processor, reference_image, width, height,
                                             device, dtype)
        self.bank.clear()
        self.bank.unconditional = 0
        nets.reference_unet(reference_latents, torch.zeros((), device=device), encoder_hidden_states=embeds,
                            return_dict=False)

        windows = closed_loop_windows(frames, window, overlap)
        pose_features = self._window_features(self._controls(control_maps, width, height), windows, guided)

        scheduler = nets.scheduler
        scheduler.set_timesteps(steps, device=device)
        generator = torch.Generator("cpu").manual_seed(int(seed))
        shape = (1, nets.denoising_unet.config.in_channels, frames, height // 8, width // 8)
        latents = torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)
        latents = latents * scheduler.init_noise_sigma

        last_window = {frame: w for w, indices in enumerate(windows) for frame in indices}
        halves = 2 if guided else 1
        # The reference pipelines average overlapping windows' predictions inside their guidance
        # branch only: without guidance (scale <= 1) they add up. Kept, so a seed gives their frames.
        for step, timestep in enumerate(scheduler.timesteps):
            final = step == len(scheduler.timesteps) - 1
            prediction = torch.zeros((halves,) + latents.shape[1:], device=device, dtype=dtype)
            counter = torch.zeros((1, 1, frames, 1, 1), device=device, dtype=dtype)
            for w, indices in enumerate(windows):
                if stop is not None and stop.is_set():
                    return
                prediction[:, :, indices] += self._denoise(latents[:, :, indices], timestep, embeds,
                                                           pose_features(w), guided)
                counter[:, :, indices] += 1
                if not guided:  # see below: without guidance the reference adds overlapping windows up
                    counter[:, :, indices] = 1
                if final:
                    done = [f for f in indices if last_window[f] == w]
                    if done:
                        latents[:, :, done] = self._step(prediction[:, :, done] / counter[:, :, done], timestep,
                                                         latents[:, :, done], guidance)
                        yield from zip(done, self._decode(latents[:, :, done]))
            if not final:
                latents = self._step(prediction / counter, timestep, latents, guidance)
        self.bank.clear()

    def _denoise(self, latents: torch.Tensor, timestep, embeds: torch.Tensor, pose: list[torch.Tensor],
                 guided: bool) -> torch.Tensor:
        """Noise prediction for one window: (halves, 4, window, h, w), unconditional half first."""
        nets = self.networks
        count = latents.shape[2]
        conditional = embeds.expand(count, -1, -1)
        if guided:
            sample = torch.cat([latents, latents])
            states = torch.cat([torch.zeros_like(conditional), conditional])
            self._pose_features.features = [torch.cat([level, level]) for level in pose]
            self.bank.unconditional = count  # the first `count` batch entries attend without the bank
        else:
            sample, states, self._pose_features.features = latents, conditional, pose
            self.bank.unconditional = 0
        sample = nets.scheduler.scale_model_input(sample, timestep)
        try:
            return nets.denoising_unet(sample, timestep, encoder_hidden_states=states, return_dict=False)[0]
        finally:
            self._pose_features.features = None

    def _step(self, prediction: torch.Tensor, timestep, latents: torch.Tensor, guidance: float) -> torch.Tensor:
        return self.networks.scheduler.step(guide(prediction, guidance), timestep, latents, return_dict=False)[0]

    def _decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        frames = (1 / LATENT_SCALE) * latents[0].permute(1, 0, 2, 3)  # (n, 4, h, w), as the reference scales
        return decode_to_images(self.networks.vae, frames, DECODE_BATCH)
