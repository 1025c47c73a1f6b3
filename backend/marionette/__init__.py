"""Marionette backend: animates a reference image to follow per-frame control maps and keypoints.

Parts: `cli` (marionette serve / render / token), `server` (protocol v1 over TCP), `jobs` (the job
store on disk), `engines` (warp on CPU; diffusion engines later)."""

__version__ = "0.1.0"
