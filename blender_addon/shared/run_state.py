"""What the panels show of runs in progress, runtime only (never saved in the .blend): the one job
that runs (Marionette runs one at a time) and the backend's status line."""

from __future__ import annotations

import bpy

job = None  # the Job in progress (shared.jobs.Job), if any
backend_status = ""  # one line about the backend, set by Test, Start and Stop


def busy_message() -> str | None:
    """Why a new job cannot start now, or None."""
    if job is None:
        return None
    return f"Marionette is busy with {job.label}; wait, or press Esc to cancel it"


def set_backend_status(text: str) -> None:
    global backend_status
    backend_status = text
    redraw_panels()


def redraw_panels() -> None:
    """Redraw the 3D Viewports, whose sidebar shows Marionette's panels."""
    window_manager = bpy.context.window_manager
    for window in window_manager.windows if window_manager else ():
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()
