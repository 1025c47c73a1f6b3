"""The engine's weights on the backend's machine, from the Generate panel: Check asks the backend
for the folder's state, Fetch Weights has the backend fetch them from the Hugging Face Hub (the
`weights` request, docs/PROTOCOL.md) with progress, Esc cancelling. The folder is the engine's
*Weights* setting, or the backend's own default for the engine when that is empty."""

from __future__ import annotations

import threading

import bpy

from ..preferences import backend_settings
from ..shared import engines, run_state
from ..shared.jobs import Job, JobOperator, MarionetteError, Outcome, ThreadJob

states: dict[str, dict] = {}  # engine -> the backend's last answer about its weights (runtime only)


def _request(scene) -> dict:
    engine = scene.marionette.engine
    declaration = engines.declared_engines.get(engine)
    if declaration is None or not declaration.get("needs_weights"):
        raise MarionetteError(f"the {engine} engine needs no weights")
    folder = engines.absolute_paths(declaration, engines.settings_for(scene, engine)).get("weights")
    request = {"type": "weights", "engine": engine, **({"folder": folder} if folder else {})}
    if scene.marionette.weights_release in (declaration.get("weights_releases") or ())[1:]:
        request["release"] = scene.marionette.weights_release  # another than the engine's own
    return request


def _gib(size: float) -> str:
    return f"{size / 1e9:.1f} GB"


class WeightsFetchJob(Job):
    """A fetch on the backend: its progress messages until the folder's state comes back."""

    label = "fetching weights"
    tick = 0.2

    def __init__(self, settings, request: dict, accept: bool):
        self.settings, self.request, self.accept = settings, request, accept
        self.done = self.total = 0
        self.file = ""
        self.answer: dict | None = None
        self.error: str | None = None
        self.client = None
        self.cancelled = False
        self.thread = threading.Thread(target=self._run, name="marionette-weights", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.client = self.settings.client(timeout=None)
            self.client.connect()
            self.client.send({**self.request, "action": "fetch", "accept_licences": self.accept})
            while True:
                header = self.client.receive().header
                if header.get("type") == "weights_progress":
                    self.done, self.total, self.file = header["done"], header["total"], header["file"]
                elif header.get("type") == "weights" and header.get("state") not in ("fetching", "cancelling"):
                    self.answer = header
                    return
        except Exception as error:  # noqa: BLE001 -- reported on the main thread, never lost here
            self.error = str(error)
        finally:
            if self.client is not None:
                self.client.close()

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 0.0

    @property
    def status(self) -> str:
        return f"weights: {self.file} ({_gib(self.done)} of {_gib(self.total)})" if self.total else "weights: starting"

    def step(self, budget: float) -> bool:
        self.thread.join(min(budget, 0.05))
        self.waiting = self.thread.is_alive()
        return self.waiting

    def cancel(self) -> None:
        """Ask the backend to stop; the job ends at a later step, when the backend confirms (the main
        thread never waits for it)."""
        if self.client is not None and not self.cancelled:
            self.cancelled = True
            try:
                self.client.send({**self.request, "action": "cancel"})
            except OSError:
                pass

    def finish(self) -> Outcome:
        if self.error:
            raise MarionetteError(f"Fetch Weights: {self.error}")
        states[self.request["engine"]] = self.answer or {}
        state = (self.answer or {}).get("state")
        if state == "cancelled":
            return Outcome("Fetch Weights cancelled; the files that arrived whole stay", cancelled=True)
        if state != "ready":
            raise MarionetteError(f"Fetch Weights: {(self.answer or {}).get('status', 'failed')}")
        return Outcome(f"The {self.request['engine']} weights are ready in {self.answer['folder']}")


class MARIONETTE_OT_fetch_weights(JobOperator, bpy.types.Operator):
    """Have the backend fetch the engine's weights from the Hugging Face Hub into its folder (on the
    backend's machine), with progress; Esc cancels"""

    bl_idname = "marionette.fetch_weights"
    bl_label = "Fetch Weights"

    def make_job(self, context):
        scene = context.scene
        request = _request(scene)
        known = states.get(request["engine"], {})
        if known.get("licences") and not scene.marionette.accept_weight_licences:
            raise MarionetteError("the weights come under " + ", ".join(
                f"{repo} ({licence})" for repo, licence in known["licences"].items())
                + ": read them, then tick Accept the Licences")
        return WeightsFetchJob(backend_settings(context), request, scene.marionette.accept_weight_licences)

    def job_done(self, context, job, outcome):
        run_state.redraw_panels()


class MARIONETTE_OT_check_weights(JobOperator, bpy.types.Operator):
    """Ask the backend whether the engine's weights folder has every file the engine reads"""

    bl_idname = "marionette.check_weights"
    bl_label = "Check Weights"
    exclusive = False

    def make_job(self, context):
        settings, request = backend_settings(context), _request(context.scene)

        def work():
            with settings.client(timeout=30.0) as client:
                client.send(request)
                return client.receive().header

        def done(answer):
            states[request["engine"]] = answer
            run_state.redraw_panels()
            return Outcome(f"{request['engine']} weights: {answer.get('state')} ({answer.get('status')})")

        return ThreadJob("checking the weights", work, done)


def draw(layout, scene, engine: dict) -> None:
    """The weights box of the Generate panel, for an engine that needs weights."""
    box = layout.box()
    known = states.get(engine["name"])
    if known is None:
        box.label(text="Weights: not checked yet (Check asks the backend)", icon="QUESTION")
    else:
        icon = "CHECKMARK" if known.get("state") == "ready" else "ERROR"
        box.label(text=f"Weights: {known.get('state')}", icon=icon)
        box.label(text=str(known.get("status", ""))[:120])
        if known.get("state") != "ready" and known.get("listed"):
            box.label(text=f"Fetch brings {_gib(known.get('size', 0))} into {known.get('folder')}")
        for repo, licence in (known.get("licences") or {}).items():
            box.label(text=f"{repo}: {licence}", icon="INFO")
        if known.get("licences"):
            box.prop(scene.marionette, "accept_weight_licences")
    if len(engine.get("weights_releases") or ()) > 1:
        box.prop(scene.marionette, "weights_release")
    row = box.row(align=True)
    row.operator("marionette.check_weights", text="Check")
    row.operator("marionette.fetch_weights", text="Fetch Weights", icon="IMPORT")


classes = (MARIONETTE_OT_fetch_weights, MARIONETTE_OT_check_weights)

register, unregister = bpy.utils.register_classes_factory(classes)
