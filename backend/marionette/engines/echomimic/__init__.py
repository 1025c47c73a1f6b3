"""EchoMimic v1 (antgroup/echomimic): audio-driven portraits on the animate-anyone engine's parts."""
