"""The one runner of long work in the extension: control maps, Generate, lip sync, and the renders
Generate makes on its way.

A Job does its work in slices on Blender's main thread (anything slow off it runs on a thread the
job owns and polls). One vocabulary for every job:

    step(budget)  do up to `budget` seconds of work; True while there is more to do
    finish()      after the last step: the Outcome (the report for the user); MarionetteError if it failed
    cancel()      Esc: stop as soon as possible (the next step returns False, finish says "cancelled")
    close()       give back whatever the job borrowed (staged files, helper scenes, render settings,
                  the backend connection); always called, once the job has ended or failed

An operator that runs a job inherits JobOperator and says how to make the job (make_job); it gets a
blocking run for scripts and `blender -b` (a progress line per 10% for farm logs) and a modal run
with a window (timer, progress in the panel and the status bar, Esc cancels), and the check that
keeps two jobs from running at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import bpy

from ..core.client import BackendError
from . import run_state

MODAL_BUDGET = 0.05  # seconds of work per timer tick with a window: efficient, and the UI stays responsive
BLOCKING_BUDGET = 0.5  # seconds of work per slice in a blocking run
IDLE_WAIT = 0.02  # seconds a blocking run sleeps while its job only waits for another thread


class MarionetteError(Exception):
    """Bad input or a failed run; the message names the cause and the fix (shown as an error report)."""


@dataclass
class Outcome:
    """How a job ended: the report for the user."""
    message: str
    cancelled: bool = False
    warning: bool = False  # it finished, but the user should look at something


class Job:
    """One long piece of work; see the module docstring for the vocabulary."""

    label = "work"  # what it is, for messages: "Marionette is busy with <label>"
    tick = 0.05  # seconds between slices in the modal run
    waiting = False  # True while the last slice only waited for another thread

    @property
    def progress(self) -> float:
        """0..1, for the progress bar."""
        return 0.0

    @property
    def status(self) -> str:
        """The progress line: what it does now."""
        return self.label

    def step(self, budget: float) -> bool:
        raise NotImplementedError

    def finish(self) -> Outcome:
        raise NotImplementedError

    def cancel(self) -> None:
        pass

    def close(self) -> None:
        pass


class ThreadJob(Job):
    """A job whose work is one blocking call that touches no bpy (the backend, say), run on a thread
    of its own; `done(result)` then makes the Outcome on the main thread, or `failed(message)` hears
    of the error before it is reported. Esc drops the result (a call already sent finishes on its
    thread, unheard)."""

    tick = 0.2

    def __init__(self, label: str, work: Callable[[], object], done: Callable[[object], Outcome],
                 failed: Callable[[str], None] | None = None):
        self.label, self.work, self.done, self.failed = label, work, done, failed
        self.thread: threading.Thread | None = None
        self.outcome: dict = {}
        self.cancelled = False

    def _run(self) -> None:
        try:
            self.outcome["result"] = self.work()
        except (BackendError, MarionetteError) as error:
            self.outcome["error"] = str(error)
        except Exception as error:  # reported, never lost in a thread
            self.outcome["error"] = f"unexpected failure: {type(error).__name__}: {error}"

    def step(self, budget: float) -> bool:
        if self.cancelled:
            return False
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=f"marionette-{self.label}", daemon=True)
            self.thread.start()
        self.thread.join(min(budget, 0.05))
        self.waiting = self.thread.is_alive()
        return self.waiting

    def finish(self) -> Outcome:
        if self.cancelled:
            return Outcome(f"{self.label[:1].upper()}{self.label[1:]} cancelled", cancelled=True)
        if "error" in self.outcome:
            if self.failed is not None:
                self.failed(self.outcome["error"])
            raise MarionetteError(self.outcome["error"])
        return self.done(self.outcome.get("result"))

    def cancel(self) -> None:
        self.cancelled = True


def run_to_end(job: Job, log_progress: bool = False) -> Outcome:
    """Run a job to its end on this thread (scripts, `blender -b`); it is closed afterwards."""
    try:
        reported = -1
        while job.step(BLOCKING_BUDGET):
            if log_progress and int(job.progress * 10) > reported:
                reported = int(job.progress * 10)  # a line per 10%, for farm logs
                print(f"Marionette: {reported * 10}% ({job.status})", flush=True)
            if job.waiting:
                time.sleep(IDLE_WAIT)
        return job.finish()
    finally:
        job.close()


class JobOperator:
    """Mixin for an operator that runs a Job: make_job(context) makes it (MarionetteError for bad
    input, reported), job_done(context, job, outcome) may act on a run that was not cancelled."""

    _job: Job | None = None
    _timer = None

    # One exclusive job at a time (the scene's control maps, Generate, lip sync); a short backend call
    # (Test, Start) is not exclusive and runs beside it, without the progress bar.
    exclusive = True

    @classmethod
    def poll(cls, context):
        busy = run_state.busy_message() if cls.exclusive else None
        if busy:
            cls.poll_message_set(busy)
            return False
        return True

    def make_job(self, context) -> Job:
        raise NotImplementedError

    def job_done(self, context, job: Job, outcome: Outcome) -> None:
        pass

    def _make(self, context) -> Job | None:
        busy = run_state.busy_message() if self.exclusive else None
        if busy:
            self.report({"ERROR"}, busy)
            return None
        try:
            return self.make_job(context)
        except MarionetteError as error:
            self.report({"ERROR"}, str(error))
            return None

    def execute(self, context):
        """The blocking run, for scripts and `blender -b` (render farms)."""
        job = self._make(context)
        if job is None:
            return {"CANCELLED"}
        if self.exclusive:
            run_state.job = job
        try:
            outcome = run_to_end(job, log_progress=bpy.app.background and self.exclusive)
        except MarionetteError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        finally:
            if self.exclusive:
                run_state.job = None
        return self._ended(context, job, outcome)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        job = self._make(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        window_manager = context.window_manager
        if self.exclusive:
            run_state.job = job
            window_manager.progress_begin(0, 100)
        self._timer = window_manager.event_timer_add(job.tick, window=context.window)
        window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()  # the job ends at its next step, or when the backend confirms
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        try:
            if job.step(MODAL_BUDGET):
                if self.exclusive:
                    context.window_manager.progress_update(100.0 * job.progress)
                    context.workspace.status_text_set(f"Marionette: {job.status} (Esc to cancel)")
                    run_state.redraw_panels()
                return {"RUNNING_MODAL"}
            outcome = job.finish()
        except MarionetteError as error:
            self._end_modal(context)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        except BaseException:
            self._end_modal(context)
            raise
        self._end_modal(context)
        return self._ended(context, job, outcome)

    def _end_modal(self, context) -> None:
        self._job.close()
        if self.exclusive:
            run_state.job = None
        window_manager = context.window_manager
        window_manager.event_timer_remove(self._timer)
        if self.exclusive:
            window_manager.progress_end()
            context.workspace.status_text_set(None)
        run_state.redraw_panels()

    def _ended(self, context, job: Job, outcome: Outcome) -> set[str]:
        if outcome.cancelled:
            self.report({"WARNING"}, outcome.message)
            return {"CANCELLED"}
        self.job_done(context, job, outcome)
        self.report({"WARNING"} if outcome.warning else {"INFO"}, outcome.message)
        return {"FINISHED"}
