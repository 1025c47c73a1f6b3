"""`background`: the plate a replace-mode engine generates the character into; Blender renders it
from a strip of the Video Sequencer, as the Sequencer shows it, at the job's size."""

from . import Style

STYLE = Style("background", "Background Plate", "The plate the character is generated into: a rendered set or a "
                                                "live-action plate, from the Video Sequencer", "background")
