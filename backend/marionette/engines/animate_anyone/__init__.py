"""Moore-AnimateAnyone and AniPortrait: one ReferenceNet-and-motion-module machine, two pose guiders.

    engine.py     the engines: what they take, their checks, the frames they yield
    pipeline.py   the generation loop (windows, guidance, streaming)
    models.py     their networks: Moore's set on the shared UNets, AniPortrait's pose guider
    weights.py    the release-layout weights folder: checked, loaded, written (tests)
"""

ENGINES = {"animate-anyone": "engine:AnimateAnyoneEngine", "aniportrait": "engine:AniPortraitEngine"}
