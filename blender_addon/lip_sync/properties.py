"""The Lip Sync settings of the scene (part of scene.marionette; see scene_settings.py)."""

from bpy.props import StringProperty

from ..compat import BLEND_RELATIVE_PATH


class LipSyncSettings:
    lip_sync_weights: StringProperty(
        name="Lip Sync Weights", subtype="DIR_PATH", default="", options=BLEND_RELATIVE_PATH,
        description="Lip Sync from Audio: the folder on the backend's machine with AniPortrait's audio2mesh.pt "
                    "and wav2vec2-base-960h/ (empty: the backend's own weights/lip-sync folder, which `marionette "
                    "weights fetch lip-sync` fills)")
