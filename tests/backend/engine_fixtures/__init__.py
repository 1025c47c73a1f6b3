"""Engine packages for the discovery tests (not the backend's own)."""
