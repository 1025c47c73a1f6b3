"""Marionette backend: animates a reference image to follow per-frame control maps and keypoints.

Parts: `cli` (the `marionette` command; `render_command`), `server` (the protocol over TCP, with
`receiving`, `job_runner`), `jobs` (the job store), `job_inputs` (the one job validator), `engines`
(discovered engine packages), `models` (network parts the torch engines share), `warping` (the warp
rig), `lip_sync` (audio2mesh)."""

__version__ = "0.1.0"
