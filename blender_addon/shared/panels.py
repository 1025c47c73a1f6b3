"""Where every Marionette panel lives (the 3D Viewport's sidebar, tab "Marionette"), and what the
panels draw alike."""

from __future__ import annotations

from . import run_state


class SidebarPanel:
    """Mixin of every Marionette panel."""
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Marionette"


def draw_job_progress(layout, job_type) -> bool:
    """The progress bar of the running job when it is a `job_type`; True when it drew one."""
    job = run_state.job
    if not isinstance(job, job_type):
        return False
    layout.progress(factor=job.progress, text=f"{job.status} (Esc cancels)")
    return True


def draw_wrapped(layout, text: str, width: int = 48, icon: str = "NONE") -> None:
    """A long message as several labels (a sidebar label does not wrap)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    for index, text_line in enumerate(lines + ([line] if line else [])):
        layout.label(text=text_line, icon=icon if index == 0 else "NONE")
