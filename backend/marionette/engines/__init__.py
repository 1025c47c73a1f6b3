"""Engines by name. An engine is built on first use and kept, so a loaded model serves many jobs."""

from __future__ import annotations

from .base import Engine, EngineError, EngineInfo, EngineInput, JobInputs
from .warp import WarpEngine

ENGINE_CLASSES = {WarpEngine.info.name: WarpEngine}
try:  # the diffusion engines need the `diffusion` extra (torch, diffusers, transformers)
    from .animate_anyone.engine import AnimateAnyoneEngine, AniPortraitEngine
    from .echomimic.engine import EchoMimicEngine
    from .wan_animate.engine import WanAnimateEngine
except ImportError:
    pass
else:
    for _engine in (AnimateAnyoneEngine, AniPortraitEngine, WanAnimateEngine, EchoMimicEngine):
        ENGINE_CLASSES[_engine.info.name] = _engine


class EngineRegistry:
    def __init__(self, classes: dict | None = None):
        self.classes = dict(classes or ENGINE_CLASSES)
        self._loaded: dict[str, Engine] = {}

    def infos(self) -> list[EngineInfo]:
        return [cls.info for cls in self.classes.values()]

    def get(self, name: str) -> Engine:
        if name not in self.classes:
            raise EngineError(f"no engine '{name}'; this backend has: {', '.join(self.classes)}")
        if name not in self._loaded:
            self._loaded[name] = self.classes[name]()
        return self._loaded[name]


__all__ = ["Engine", "EngineError", "EngineInfo", "EngineInput", "EngineRegistry", "JobInputs"]
