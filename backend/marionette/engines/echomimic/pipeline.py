"""The EchoMimic v1 generation loop: reference image + audio features (+ face maps) -> frames.

Semantics of the released inference (antgroup/echomimic: the Audio2Video and AudioPose2Video
pipelines, plain and accelerated):

- Conditioning: no image embedding at all. The ReferenceNet runs ONCE, at timestep 0, on the VAE
  latent mean of the reference (width x height, pixels in [-1, 1], times 0.18215), with no
  cross-attention; its self-attention inputs form the reference bank, kept in float16 whatever the
  model dtype (the release casts it). Each frame's audio features (50 x 384, see audio_features)
  are the keys and values of the denoiser's cross-attentions, whose output counts three times. The
  face locator's features are added to the denoiser's conv_in output: audio mode, ONE face-box mask
  for every frame; pose mode, one landmark map per frame (RGB as drawn, / 255).
- Noise: ONE draw torch.randn((1, 4, frames, H/8, W/8)) from a CPU generator seeded with the seed,
  in the model dtype; audio mode clamps it to [-1.5, 1.5]; times init_noise_sigma. No other random
  draw (DDIM, eta 0).
- Windows, "closed loop": 12 frames, overlap 3, starts 0, 9, 18, ... < frames, each covering frames
  (start .. start + 11) mod frames (one window of every frame when frames <= 12). At step t_i
  (0-based) every window is shifted by t_i * 2 frames (audio) or t_i * 3 (pose), mod frames; the
  frames of a window keep that order (the motion modules see them so). Predictions are summed per
  frame, divided by the count.
- Guidance: [unconditional, conditional] in one batch, scale 2.5 with 30 steps; the unconditional
  half has zero audio features, a zero face-locator feature and no reference bank. The accelerated
  checkpoints: 6 steps, guidance 1.0 (one half), and the prediction goes through the release's
  v -> x0 -> v round trip (the identity up to rounding, kept for the rounding).
- Decoding one frame at a time, (x / 2 + 0.5).clamp(0, 1), truncated to uint8.

As the release does, the plain (not accelerated) pipelines divide the summed predictions by the
count only when they guide (scale > 1): without guidance overlapping windows add up. The
accelerated ones always divide.

The first frame is final only after the last step (the closed loop lets every window shift over the
whole clip), so frames are decoded and yielded in order after the last step, each as soon as it is
decoded.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Iterator

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from ...images import resize_to
from ...models.denoising import AddedFeatures, decode_to_images, encode_reference, guide
from ...models.reference_attention import ReferenceBank, install
from ...models.unets import LATENT_SCALE
from ...models.windows import closed_loop_windows, shifted_windows
from .audio_features import whisper_features
from .models import AUDIO_ATTENTION_SCALE, MODES, EchoMimicNetworks

CONTEXT_FRAMES = 12
CONTEXT_OVERLAP = 3
WINDOW_SHIFT = {"audio": 2, "pose": 3}  # frames every window moves per denoising step
NOISE_CLAMP = {"audio": 1.5, "pose": None}
DEFAULT_STEPS = {False: 30, True: 6}  # by `accelerated`
DEFAULT_GUIDANCE = {False: 2.5, True: 1.0}
DEFAULT_SEED = 420  # the release's default
BANK_DTYPE = torch.float16
FACE_LOCATOR_BATCH = 16


def velocity_round_trip(prediction: torch.Tensor, sample: torch.Tensor, alphas_cumprod: torch.Tensor,
                        timestep: torch.Tensor) -> torch.Tensor:
    """The accelerated release's treatment of the v-prediction: x0 = a_t * x - b_t * v, then the
    "velocity" from x towards x0 at timestep -1 (alpha 1). Written out that is (x0 - a_t * x) / -b_t,
    which is v again up to rounding; the release's expression multiplies by its t = -1 terms (1 and
    0), exact in floating point, so this form rounds as the release does. a_t, b_t are computed in
    float32 and cast to the sample's dtype."""
    alpha = alphas_cumprod.to(sample.device)[torch.clip(timestep, 0)].view(-1, 1, 1, 1, 1)
    a_t = (alpha ** 0.5).to(sample.dtype)
    b_t = ((1 - alpha) ** 0.5).to(sample.dtype)
    original = a_t * sample - b_t * prediction
    return (original - a_t * sample) / (-b_t)


class EchoMimicPipeline:
    """Runs EchoMimic networks as the release does for their mode ("audio" or "pose") and kind
    (plain or accelerated), both taken from `networks`."""

    def __init__(self, networks: EchoMimicNetworks, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32):
        if networks.mode not in MODES:
            raise ValueError(f"unknown EchoMimic mode '{networks.mode}'; one of {', '.join(MODES)}")
        self.networks = networks.to(torch.device(device), dtype)
        self.device, self.dtype = torch.device(device), dtype
        self.bank = ReferenceBank()
        self.bank.storage_dtype = BANK_DTYPE
        install(networks.reference_unet, networks.denoising_unet, self.bank,
                cross_attention_scale=AUDIO_ATTENTION_SCALE)
        self._face_features = AddedFeatures(networks.denoising_unet, down_blocks=False)
        scale = 2 ** (len(networks.vae.config.block_out_channels) - 1)
        self.reference_processor = VaeImageProcessor(vae_scale_factor=scale, do_convert_rgb=True)

    @property
    def mode(self) -> str:
        return self.networks.mode

    def audio_features(self, audio16k: np.ndarray, fps: float, frames: int) -> np.ndarray:
        """(frames, 50, width) features of the clip for this pipeline's audio encoder, computed on
        its device in float16 on a GPU and float32 on a CPU, as the release runs Whisper."""
        return whisper_features(self.networks.audio_encoder, audio16k, fps, frames, self.device)

    @torch.no_grad()
    def __call__(self, reference: np.ndarray, audio_features: np.ndarray | torch.Tensor, width: int, height: int,
                 face_mask: np.ndarray | None = None, pose_maps: Sequence[np.ndarray] | None = None,
                 steps: int | None = None, guidance: float | None = None, seed: int = DEFAULT_SEED,
                 stop: threading.Event | None = None, context: int = CONTEXT_FRAMES,
                 overlap: int = CONTEXT_OVERLAP) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, (height, width, 3) uint8 RGB) in order.

        reference: (H', W', 3|4) uint8 RGB(A) portrait (resized to width x height if needed).
        audio_features: (frames, 50, width) per video frame (audio_features.whisper_features); the
            number of frames generated.
        face_mask (audio mode): (height, width) uint8 mask, 255 = face (face_mask.face_box_mask), or
            float in [0, 1]; None = the whole frame (the release's fallback without a face).
        pose_maps (pose mode): one `echomimic-face` landmark map per frame, (H', W', 3) uint8 RGB.
        steps, guidance: None = the release's defaults (30 and 2.5; accelerated 6 and 1.0).
        width, height: multiples of 8, pixels.
        """
        nets, device, dtype = self.networks, self.device, self.dtype
        accelerated = nets.accelerated
        steps = DEFAULT_STEPS[accelerated] if steps is None else int(steps)
        guidance = DEFAULT_GUIDANCE[accelerated] if guidance is None else float(guidance)
        features = torch.as_tensor(np.asarray(audio_features) if not torch.is_tensor(audio_features)
                                   else audio_features).to(device, dtype)
        frames = features.shape[0]
        if frames == 0:
            return
        if width % 8 or height % 8:
            raise ValueError(f"width and height must be multiples of 8, not {width}x{height}")
        guided = guidance > 1.0

        face = self._face_locator_features(frames, width, height, face_mask, pose_maps)

        reference_image = Image.fromarray(np.ascontiguousarray(reference[..., :3]))
        reference_latents = encode_reference(nets.vae, self.reference_processor, reference_image, width, height,
                                             device, dtype)
        scheduler = nets.scheduler
        scheduler.set_timesteps(steps, device=device)
        self.bank.clear()
        self.bank.unconditional = 0
        nets.reference_unet(reference_latents, torch.zeros_like(scheduler.timesteps[0]), None, return_dict=False)

        generator = torch.Generator("cpu").manual_seed(int(seed))
        shape = (1, nets.denoising_unet.config.in_channels, frames, height // 8, width // 8)
        latents = torch.randn(shape, generator=generator, dtype=dtype).to(device)
        if NOISE_CLAMP[self.mode] is not None:
            latents = torch.clamp(latents, -NOISE_CLAMP[self.mode], NOISE_CLAMP[self.mode])
        latents = latents * scheduler.init_noise_sigma

        windows = closed_loop_windows(frames, context, overlap)
        halves = 2 if guided else 1
        for step, timestep in enumerate(scheduler.timesteps):
            prediction = torch.zeros((halves,) + latents.shape[1:], device=device, dtype=dtype)
            counter = torch.zeros((1, 1, frames, 1, 1), device=device, dtype=dtype)
            for window in shifted_windows(windows, step, WINDOW_SHIFT[self.mode], frames):
                if stop is not None and stop.is_set():
                    self.bank.clear()
                    return
                prediction[:, :, window] = prediction[:, :, window] + self._denoise(
                    latents[:, :, window], timestep, features[window], face(window), guided, accelerated)
                counter[:, :, window] = counter[:, :, window] + 1
            average = prediction / counter if guided or accelerated else prediction
            latents = scheduler.step(guide(average, guidance), timestep, latents, return_dict=False)[0]
        self.bank.clear()

        for index in range(frames):
            if stop is not None and stop.is_set():
                return
            frame = (1 / LATENT_SCALE) * latents[0, :, index:index + 1].permute(1, 0, 2, 3)
            yield index, decode_to_images(nets.vae, frame, 1)[0]

    def _face_locator_features(self, frames: int, width: int, height: int, face_mask: np.ndarray | None,
                               pose_maps: Sequence[np.ndarray] | None):
        """window -> the face locator's features of its frames, (len(window), C, height/8, width/8)."""
        nets, device, dtype = self.networks, self.device, self.dtype
        if self.mode == "audio":
            mask = np.full((height, width), 255, np.uint8) if face_mask is None else np.asarray(face_mask)
            if mask.shape[:2] != (height, width):
                raise ValueError(f"the face mask is {mask.shape[1]}x{mask.shape[0]}, not {width}x{height}")
            mask = mask[..., 0] if mask.ndim == 3 else mask
            tensor = torch.from_numpy(np.ascontiguousarray(mask)).to(device, dtype)
            if mask.dtype == np.uint8:
                tensor = tensor / 255.0  # in the model dtype, as the release divides
            single = nets.face_locator(tensor[None, None])  # one mask for every frame
            return lambda window: single.expand(len(window), -1, -1, -1)
        if pose_maps is None or len(pose_maps) != frames:
            count = 0 if pose_maps is None else len(pose_maps)
            raise ValueError(f"EchoMimic's pose mode needs one echomimic-face map per frame: {count} maps for "
                             f"{frames} frames of audio features")
        chunks = []
        for start in range(0, frames, FACE_LOCATOR_BATCH):
            maps = [resize_to(np.ascontiguousarray(pose_maps[i][..., :3]), width, height)
                    for i in range(start, min(start + FACE_LOCATOR_BATCH, frames))]
            pixels = torch.from_numpy(np.stack(maps)).permute(0, 3, 1, 2).to(device, dtype) / 255.0
            chunks.append(nets.face_locator(pixels))
        every_frame = torch.cat(chunks)
        return lambda window: every_frame[window]

    def _denoise(self, latents: torch.Tensor, timestep, audio: torch.Tensor, face: torch.Tensor, guided: bool,
                 accelerated: bool) -> torch.Tensor:
        """The denoiser's prediction for one window: (halves, 4, window, h, w), unconditional first."""
        nets = self.networks
        count = latents.shape[2]
        if guided:
            sample = torch.cat([latents, latents])
            states = torch.cat([torch.zeros_like(audio), audio])
            self._face_features.features = [torch.cat([torch.zeros_like(face), face])]
            self.bank.unconditional = count  # the first `count` batch entries attend without the bank
        else:
            sample, states, self._face_features.features = latents, audio, [face]
            self.bank.unconditional = 0
        sample = nets.scheduler.scale_model_input(sample, timestep)
        try:
            prediction = nets.denoising_unet(sample, timestep, encoder_hidden_states=states, return_dict=False)[0]
        finally:
            self._face_features.features = None
        if accelerated:
            prediction = velocity_round_trip(prediction, sample, nets.scheduler.alphas_cumprod, timestep)
        return prediction
