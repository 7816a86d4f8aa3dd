"""Background work: one heavy napari thread worker at a time, with its progress bars and
its end (errors shown once, the state redrawn)."""

from __future__ import annotations

import time

from napari.qt.threading import create_worker
from napari.utils import progress
from qtpy.QtCore import QTimer

from napari_cosine_tracker.core.workflow import Phase

from .common import PROGRESS_INTERVAL_S


class Jobs:
    """Starting a worker, advancing its progress, ending it."""

    def _start(self, job: str, func, *args, total: int, desc: str, on_yield=None,
               on_return=None):
        """Run ``func`` (a generator or function) in a napari thread worker."""
        # Connecting ``errored`` here stops superqt from re-raising the error in the event
        # loop; _on_error shows it once, as a napari notification.
        worker = create_worker(func, *args, _start_thread=False,
                               _connect={"errored": self._on_error})
        self._worker, self._job = worker, job
        self._last_error = None
        self._pbar = progress(total=total, desc=desc)
        self._pbar_pending, self._pbar_last, self._pbar_desc = 0, time.monotonic(), desc
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(0)
        self.progress_bar.setFormat(f"{desc}: %v / %m")
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        if on_return is not None:
            worker.returned.connect(on_return)
        worker.finished.connect(self._on_finished)
        worker.start()
        self._update_state()
        return worker

    def _step(self, n: int = 1, desc: str | None = None):
        """Advance the progress: the dock's bar at once, napari's at most every 0.5 s.

        Updating napari's progress bar (activity dock) takes tens of milliseconds on the GUI
        thread, so doing it per frame made the viewer stutter during a run.
        """
        bar = self.progress_bar
        bar.setValue(min(bar.value() + n, bar.maximum()))
        if desc and desc != self._pbar_desc:
            bar.setFormat(f"{desc}: %v / %m")
            self._pbar_desc = desc
        self._pbar_pending += n
        if time.monotonic() - self._pbar_last >= PROGRESS_INTERVAL_S:
            self._flush_progress()

    def _flush_progress(self):
        # napari's progress bar may process pending events while it updates, so the job can
        # finish (and drop its bar) in the middle of this call: work on a local reference.
        pbar, n = self._pbar, self._pbar_pending
        self._pbar_pending, self._pbar_last = 0, time.monotonic()
        if pbar is None:
            return
        if self._pbar_desc and pbar.desc != self._pbar_desc:
            pbar.set_description(self._pbar_desc)
        if n:
            pbar.update(n)

    def _on_error(self, exc):
        from napari.utils.notifications import notification_manager

        # a notification with the step and cause (and the traceback behind "View traceback")
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)
        self._last_error = str(exc)

    def _on_finished(self):
        if self._closed:
            return
        if self._showing is not None:  # the result is still being shown: finish after it
            self._finish_pending = True
            return
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        job = self._job
        ok = self._last_error is None and self.controller.stop_reason is None
        if job == "estimate" and self._last_error is None:
            self._show_estimate()
        if ok:
            self.progress_bar.setRange(0, 1)
            self.progress_bar.setValue(1)
            self.progress_bar.setFormat({"export": "Exported", "pca": "Embedding colours shown",
                                         "finetune": "Model fine-tuned",
                                         "estimate": "Cells measured"}
                                        .get(job, "Done"))
        elif self._last_error is None:
            s = self.session
            frames = f"{s.frames_done} of {s.n_frames} frames" if s is not None else ""
            paused = self.controller.phase == Phase.PAUSED
            self.progress_bar.setFormat(f"{'Paused' if paused else 'Stopped'}: {frames} "
                                        "through the network" if frames else "Stopped")
        self._worker = None
        self._job = None
        self.controller.job_ended()
        self._update_state()
        if self._live_again:
            self._live_again = False
            self._debounce.start()
        self.job_finished.emit(job or "", ok)
        then, self._after_job = self._after_job, None
        if then is not None and ok:
            then()  # at once: no moment in between when the widget looks idle
        if job == "run":  # frames run before the colours were switched on
            QTimer.singleShot(0, self._fill_pca)

    def is_busy(self) -> bool:
        """Whether a background job (run, apply, export, live re-labelling) is running."""
        return (self._worker is not None or self._live_worker is not None
                or self._showing is not None)
