from marionette.engines.base import EngineInfo


class FailsToBuild:
    info = EngineInfo(name="fails-to-build", description="", device="cpu", needs_weights=False)

    def __init__(self):
        raise RuntimeError("no device to run on")


class Misnamed:
    info = EngineInfo(name="something-else", description="", device="cpu", needs_weights=False)


class Works:
    info = EngineInfo(name="works", description="a fine engine", device="cpu", needs_weights=False)
