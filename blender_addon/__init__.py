"""Marionette: an animated Blender rig turned into the control maps character-animation models take,
sent with a reference image to the Marionette backend, the frames it makes streamed into the VSE.

One folder per sidebar panel, each owning its properties, operators and panel (see the README's
Layout): control_maps/, generate/, connection/ (Backend), face/, lip_sync/, rig/ (Rig Mapping);
shared/ holds what they share, core/ what the extension shares with the backend.
"""

from . import connection, control_maps, face, generate, lip_sync, preferences, rig, scene_settings, shared
from .shared.registration import module_registration

# Panels appear in the sidebar in this order; the scene's settings group last, once every type it
# refers to is registered.
register, unregister = module_registration(preferences, shared, control_maps, generate, connection, face, lip_sync,
                                           rig, scene_settings)
