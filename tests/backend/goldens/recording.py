"""What a golden records of a pipeline run, the same way on both sides: every output of chosen
modules (forward hooks) and every scheduler step, in call order, as float32 numpy arrays."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch


def as_array(value) -> np.ndarray:
    return value.detach().to(torch.float32).cpu().numpy().copy()  # a copy: the caller may change the tensor later


class Recorder:
    def __init__(self):
        self.calls: dict[str, list] = defaultdict(list)

    def watch(self, module: torch.nn.Module, name: str, take=lambda inputs, output: output):
        """Record take(inputs, output) of every forward call of `module` under `name`; a list or
        tuple is recorded as one array per entry."""
        def hook(_module, inputs, output):
            value = take(inputs, output)
            if isinstance(value, (list, tuple)):
                self.calls[name].append([as_array(v) for v in value])
            else:
                self.calls[name].append(as_array(value))
        return module.register_forward_hook(hook)

    def watch_steps(self, scheduler, name: str = "step"):
        """Record (model output, sample, previous sample) of every scheduler.step call."""
        step = scheduler.step

        def recorded(model_output, timestep, sample, *args, **kwargs):
            result = step(model_output, timestep, sample, *args, **kwargs)
            previous = result[0] if isinstance(result, tuple) else result.prev_sample
            self.calls[name].append([as_array(model_output), as_array(sample), as_array(previous)])
            return result
        scheduler.step = recorded

    def watch_method(self, owner, method: str, name: str, take=lambda result: result):
        """Record take(result) of every call of owner.method (an object's own method, wrapped on
        that object only)."""
        original = getattr(owner, method)

        def recorded(*args, **kwargs):
            result = original(*args, **kwargs)
            value = take(result)
            self.calls[name].append(as_array(torch.as_tensor(value)))
            return result
        setattr(owner, method, recorded)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array: `name/call` or `name/call/entry`. A scheduler step's input latents are
        the previous step's output: only the first step's are kept."""
        flat = {}
        for name, calls in self.calls.items():
            for index, value in enumerate(calls):
                if isinstance(value, list):
                    for entry, array in enumerate(value):
                        if not (name == "step" and entry == 1 and index > 0):
                            flat[f"{name}/{index}/{entry}"] = array
                else:
                    flat[f"{name}/{index}"] = value
        return flat
