"""`marionette weights fetch` for the diffusers releases (sharded checkpoints named by their index,
a short commit id or a branch resolved to one commit) and for lip sync, with the real
huggingface_hub client against the Hub stand-in on loopback. Each tiny release is laid out as the
manifest lists the real one; the stand-in also serves files the manifest does not list, which must
not arrive."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("huggingface_hub")
torch = pytest.importorskip("torch")

from hub_standin import HubStandIn  # noqa: E402

NOT_LISTED = {"README.md": b"# a model card\n", "transformer/diffusion_pytorch_model.bin": b"\x80\x04 not wanted" * 80}


def run(hub, tmp_path, *args):
    env = {**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_HOME": str(tmp_path / "hf-home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DOWNLOAD_TIMEOUT": "5", "HF_HUB_ETAG_TIMEOUT": "5"}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run([sys.executable, "-m", "marionette.cli", *args], capture_output=True, text=True,
                          timeout=600, env=env, stdin=subprocess.DEVNULL)


def serve(stand_in: HubStandIn, repo: str, commit: str, folder, extra: dict[str, bytes] | None = None) -> None:
    files = {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}
    stand_in.add(repo, commit, {**files, **(extra or {})})


def as_released(folder, shard_transformer: bool = False):
    """A tiny diffusers folder given what the manifest lists of the real one: the text encoder
    sharded with its index, the tokenizer's special_tokens_map.json; the transformer sharded or not."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    encoder_folder = folder / "text_encoder"
    encoder = UMT5EncoderModel.from_pretrained(encoder_folder)
    for path in encoder_folder.iterdir():
        path.unlink()
    encoder.save_pretrained(encoder_folder, max_shard_size="30KB")
    assert (encoder_folder / "model.safetensors.index.json").is_file()
    if shard_transformer and not (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file():
        from diffusers import WanVACETransformer3DModel
        transformer = WanVACETransformer3DModel.from_pretrained(folder / "transformer")
        (folder / "transformer" / "diffusion_pytorch_model.safetensors").unlink()
        transformer.save_pretrained(folder / "transformer", max_shard_size="20KB")
        assert (folder / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    (folder / "tokenizer" / "special_tokens_map.json").write_text(json.dumps(tokenizer.special_tokens_map))
    return folder


@pytest.mark.parametrize("name, commit", [("wan-animate", "6f4df10" + "a" * 33),
                                          ("wan-animate-2-distilled", "5e" * 20),
                                          ("wan-vace", "7a" * 20),  # the transformer in one file
                                          ("wan-vace-14b", "8b" * 20)])  # the transformer sharded
def test_a_diffusers_release_arrives_whole_and_loads(tmp_path, name, commit):
    from marionette.fetching import sources_for

    if name == "wan-animate":
        from tiny_wan_animate import save_tiny_release
        release = as_released(save_tiny_release(tmp_path / "release"))
    elif name == "wan-animate-2-distilled":
        from tiny_wan_animate_2 import save_tiny_release
        release = as_released(save_tiny_release(tmp_path / "release", variant="distilled"))
    else:
        from tiny_wan_vace import save_tiny_release
        release = as_released(save_tiny_release(tmp_path / "release"), shard_transformer=name == "wan-vace-14b")
    repo = sources_for(name)[0].repo
    hub = HubStandIn()
    try:
        serve(hub, repo, commit, release, NOT_LISTED)
        folder = tmp_path / "weights"
        result = run(hub, tmp_path, "weights", "fetch", name, "--to", str(folder))
    finally:
        hub.close()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"weights in {folder}: checks out" in result.stdout
    if name != "wan-animate":  # main, not a pinned commit: the fetch says which commit it was
        assert f"{repo}: main is commit {commit} today" in result.stdout
    # Every file of the release arrived as served, shards included, each from the one commit; nothing else.
    served = {str(p.relative_to(release)) for p in release.rglob("*") if p.is_file()}
    fetched = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts}
    assert fetched == served, fetched ^ served
    assert any(path.startswith("text_encoder/model-0000") for path in fetched)
    for path in served:
        assert (folder / path).read_bytes() == (release / path).read_bytes(), path
    revisions = {path.split("/resolve/")[1].split("/")[0] for method, path, _ in hub.requests if "/resolve/" in path}
    assert revisions == {commit}, revisions

    if name == "wan-animate":
        from marionette.engines.wan_animate.weights import load_pipeline
    elif name == "wan-animate-2-distilled":
        from marionette.engines.wan_animate_2.weights import load_pipeline
    else:
        from marionette.engines.wan_vace.weights import load_pipeline
    assert load_pipeline(folder, device="cpu").transformer is not None


def test_lip_sync_fetched_predicts_as_the_release(tmp_path):
    from tiny_audio2mesh import save_release, tiny_model

    release = save_release(tiny_model(seed=3), tmp_path / "release", encoder_weights=True)
    (release / "wav2vec2-base-960h" / "preprocessor_config.json").write_text(json.dumps(
        {"feature_size": 1, "sampling_rate": 16000, "padding_value": 0.0, "do_normalize": True}))
    from marionette.fetching import sources_for

    hub = HubStandIn()
    try:
        for file in sources_for("lip-sync"):
            hub.add(file.repo, file.revision, {file.path: (release / file.target).read_bytes()})
        folder = tmp_path / "weights"
        result = run(hub, tmp_path, "weights", "fetch", "lip-sync", "--to", str(folder))
    finally:
        hub.close()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"lip-sync weights in {folder}: checks out" in result.stdout

    import numpy as np
    from marionette.lip_sync.service import predict_offsets

    audio = (np.sin(np.arange(12000) / 7) * 0.3).astype(np.float32)
    np.testing.assert_array_equal(predict_offsets(folder, audio, 30, device="cpu"),
                                  predict_offsets(release, audio, 30, device="cpu"))


def test_an_unknown_release_is_named_with_the_known_ones(tmp_path):
    hub = HubStandIn()
    try:
        result = run(hub, tmp_path, "weights", "fetch", "wan-animate-3", "--to", str(tmp_path / "w"))
    finally:
        hub.close()
    assert result.returncode == 2
    assert "no list of weights for 'wan-animate-3'" in result.stderr and "lip-sync" in result.stderr
    assert not hub.requests
