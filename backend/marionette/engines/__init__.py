"""The backend's engines, discovered: every package in this folder whose `__init__.py` names its
engine classes, ENGINES = {"engine-name": "module:Class"} (ComfyUI finds its nodes the same way).

Each engine is imported and built when the backend starts (building loads no model: that happens
at the first job). One whose import or construction fails, a package that is not installed say, is
kept as unavailable with the reason, which the handshake, `marionette engines` and Blender's engine
list show, while every other engine serves. A new engine is a new package here and nothing else.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
from dataclasses import dataclass

from .base import Engine, EngineError, EngineInfo, EngineInput, JobInputs

log = logging.getLogger("marionette.engines")

# Packages that only the `diffusion` extra installs: a missing one is named with the command that adds it.
DIFFUSION_EXTRA = {"torch", "diffusers", "transformers", "accelerate", "ftfy", "safetensors", "PIL"}


@dataclass(frozen=True)
class UnavailableEngine:
    """An engine this backend cannot run, and why (the cause and the fix)."""
    name: str
    reason: str

    def to_json(self) -> dict:
        return {"name": self.name, "reason": self.reason}


def _why(error: BaseException, where: str) -> str:
    missing = getattr(error, "name", None) if isinstance(error, ImportError) else None
    if missing:
        package = missing.split(".")[0]
        if sys.modules.get(package) is not None:  # installed, but not the version this engine needs
            return f"{error}: the installed '{package}' lacks it; install the version pyproject.toml asks for"
        fix = ("install the backend with its diffusion extra: pip install 'marionette[diffusion]'"
               if package in DIFFUSION_EXTRA else f"pip install {package}")
        return f"needs the Python package '{package}', which cannot be imported here; {fix}"
    return f"{where} failed: {type(error).__name__}: {error}"


def discover(packages: list[str] | None = None) -> tuple[dict[str, Engine], dict[str, UnavailableEngine]]:
    """Build every engine the engine packages name (by default every package in this folder):
    (engines by name, unavailable engines by name)."""
    if packages is None:
        packages = [f"{__name__}.{info.name}" for info in pkgutil.iter_modules(__path__) if info.ispkg]
    engines: dict[str, Engine] = {}
    unavailable: dict[str, UnavailableEngine] = {}
    for package_name in sorted(packages):
        package = importlib.import_module(package_name)  # light: names only, no third-party imports
        for name, target in getattr(package, "ENGINES", {}).items():
            module_name, _, class_name = target.partition(":")
            try:
                module = importlib.import_module(f"{package_name}.{module_name}")
            except Exception as error:  # noqa: BLE001 -- any import failure is the reason this engine is missing
                unavailable[name] = UnavailableEngine(name, _why(error, f"importing {package_name}.{module_name}"))
                log.warning("engine %s is unavailable: %s", name, unavailable[name].reason)
                continue
            try:
                engine = getattr(module, class_name)()
                if engine.info.name != name:
                    raise EngineError(f"{target} declares the name '{engine.info.name}', not '{name}'")
            except Exception as error:  # noqa: BLE001 -- a broken engine must not take the others down
                unavailable[name] = UnavailableEngine(name, _why(error, f"building {class_name}"))
                log.warning("engine %s is unavailable: %s", name, unavailable[name].reason)
                continue
            engines[name] = engine
    return engines, unavailable


class EngineRegistry:
    """The engines this backend serves, and those it cannot, with the reason."""

    def __init__(self, engines: dict[str, Engine] | None = None,
                 unavailable: dict[str, UnavailableEngine] | None = None):
        if engines is None:
            engines, unavailable = discover()
        self.engines = dict(engines)
        self.unavailable = dict(unavailable or {})

    def infos(self) -> list[EngineInfo]:
        return [engine.info for engine in self.engines.values()]

    def get(self, name: str) -> Engine:
        if name in self.engines:
            return self.engines[name]
        if name in self.unavailable:
            raise EngineError(f"the engine '{name}' is unavailable on this backend: {self.unavailable[name].reason}")
        raise EngineError(f"no engine '{name}'; this backend has: {', '.join(self.engines)}")


__all__ = ["Engine", "EngineError", "EngineInfo", "EngineInput", "EngineRegistry", "JobInputs",
           "UnavailableEngine", "discover"]
