"""EchoMimic v1: talking and singing portraits driven by the sound (and, in pose mode, face maps).

    engine.py          the engine: what it takes, its checks, the frames it yields
    pipeline.py        the generation loop (closed-loop windows, guidance)
    models.py          its networks on the shared Moore-lineage UNets
    weights.py         the release-layout weights folder: checked, loaded, written (tests)
    audio_features.py  the Whisper-tiny encoder and the per-frame audio features
    face_mask.py       the face-box mask of audio mode
"""

ENGINES = {"echomimic": "engine:EchoMimicEngine"}
