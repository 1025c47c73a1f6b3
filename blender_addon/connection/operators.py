"""Test Connection, Start and Stop Local Backend. The backend calls run on a thread of their own
(shared.jobs.ThreadJob) beside whatever job runs, so the UI never waits on the network."""

from __future__ import annotations

from pathlib import Path

import bpy

from ..preferences import backend_settings
from ..shared import engines, run_state
from ..shared.jobs import JobOperator, Outcome, ThreadJob
from . import backend


class MARIONETTE_OT_start_backend(JobOperator, bpy.types.Operator):
    """Start a backend on this machine with the Backend Python from the preferences"""

    bl_idname = "marionette.start_backend"
    bl_label = "Start Local Backend"
    exclusive = False

    def make_job(self, context):
        settings = backend_settings(context)
        log_folder = Path(bpy.app.tempdir or backend.default_log_folder()) / "marionette"

        def work():
            if backend.healthy(settings):
                return "already running"
            backend.start(settings, log_folder)
            backend.wait_until_healthy(settings, timeout=30.0)
            return f"started (log: {backend.log_path()})"

        def done(result):
            run_state.set_backend_status(f"Backend at {settings.host}:{settings.port} {result}")
            return Outcome(run_state.backend_status)

        run_state.set_backend_status("Backend: starting...")
        return ThreadJob("starting the backend", work, done, _failed)


class MARIONETTE_OT_stop_backend(bpy.types.Operator):
    """Stop the backend this Blender started"""

    bl_idname = "marionette.stop_backend"
    bl_label = "Stop Local Backend"

    def execute(self, context):
        if backend.stop():
            run_state.set_backend_status("Backend: stopped")
            self.report({"INFO"}, "Backend stopped")
        else:
            self.report({"WARNING"}, "This Blender started no backend")
        return {"FINISHED"}


class MARIONETTE_OT_test_connection(JobOperator, bpy.types.Operator):
    """Connect to the backend, check the token and list its engines"""

    bl_idname = "marionette.test_connection"
    bl_label = "Test Connection"
    exclusive = False

    def make_job(self, context):
        settings = backend_settings(context)

        def work():
            with settings.client(timeout=5.0) as client:
                client.ping()
                return client.capabilities

        def done(capabilities):
            engines.remember_capabilities(capabilities)
            names = ", ".join(engine["name"] for engine in capabilities["engines"])
            missing = len(capabilities.get("unavailable_engines", []))
            cluster = capabilities.get("cluster")  # a backend whose jobs run on a cluster says how big it is
            run_state.set_backend_status(f"Connected to {settings.host}:{settings.port}; engines: {names}"
                                         + (f" ({missing} unavailable)" if missing else "")
                                         + (f"; {cluster['summary']}" if cluster else ""))
            return Outcome(run_state.backend_status)

        run_state.set_backend_status("Backend: connecting...")
        return ThreadJob("testing the connection", work, done, _failed)


def _failed(message: str) -> None:
    run_state.set_backend_status(f"Backend: {message}")


classes = (MARIONETTE_OT_start_backend, MARIONETTE_OT_stop_backend, MARIONETTE_OT_test_connection)

register, unregister = bpy.utils.register_classes_factory(classes)
