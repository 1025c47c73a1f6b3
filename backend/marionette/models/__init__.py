"""Network parts the torch engines share (diffusers' `models/` for Marionette): the SD1.5 UNets of
the Moore-AnimateAnyone lineage, reference attention, the pieces of their denoising loop, windows
over long clips, checkpoint reading and key mapping, released diffusers folders checked, and the
device choice. Engines build on these and never import one another; importing this package imports no torch (its modules do)."""
