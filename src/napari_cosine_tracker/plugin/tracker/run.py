"""Section 3, the run: Run, Pause/Resume and Cancel over core.workflow's run controller,
and the embedding colours."""

from __future__ import annotations

from magicgui.widgets import CheckBox
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QHBoxLayout, QProgressBar, QPushButton

from napari_cosine_tracker.core.io import as_movie
from napari_cosine_tracker.core.workflow import (
    FrameDone,
    PairLinked,
    Phase,
    RunDone,
    SessionReady,
    Stopped,
    TrackingStarted,
)

from .common import group_box, note


class RunSection:
    """Starting, pausing and stopping a run, and drawing its messages."""

    def _build_run(self):
        """Run / Pause / Cancel, the progress bar and the embedding colours switch."""
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Run the network frame by frame, then find and link the "
                                   "cells. Cells appear while the remaining frames run.")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Pause after the current frame; Resume continues from "
                                     "there, remembering what the network saw so far.")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop after the current frame. Frames done so far are "
                                      "kept; Run continues from there.")
        buttons = QHBoxLayout()
        for b in (self.run_button, self.pause_button, self.cancel_button):
            buttons.addWidget(b)
        self.progress_bar = QProgressBar()
        self.progress_bar.setTextVisible(True)
        self.run_info = note()
        self.show_pca = CheckBox(text="Show embedding colours",
                                 tooltip="Adds a colour image in which each cell should have "
                                         "its own colour and the background is dark. Cells "
                                         "sharing a colour are hard to separate.")
        return group_box("3 · Find and follow cells", buttons, self.progress_bar,
                         self.run_info, self.show_pca)

    def run(self):
        """Start (or continue) the model on the selected movie, then cluster and track."""
        if self.controller.phase != Phase.IDLE or self._worker is not None:
            return
        movie, msg = self._check_movie()
        if msg:
            show_warning(msg)
            return
        fresh = self.session is None or self.controller.session_key != self._key() or \
            self.session.frames_done >= self.session.n_frames
        if fresh and self.auto_scale.value and self._measured != self._measure_key():
            # measure first; a successful measurement starts this run (see _on_finished)
            if self.estimate_scale() is not None:
                self._after_job = self.run
            return
        if fresh:
            self.session = None
            self.controller.session_key = self._key()
            self._prepare_layers(movie.shape)
        self._debounce.stop()
        self._tracked = False
        self._stale = False
        self._backup.clear()
        self._launch_run()

    def _launch_run(self):
        self.controller.phase = Phase.RUNNING
        key = self.controller.session_key
        session = self.session
        layer = self.movie_layer
        # a Movie named after the layer, so errors about a frame name the layer, not "array"
        movie = as_movie(layer.data, name=layer.name)
        T = movie.shape[0]
        done = session.frames_done if session is not None else 0
        total = (T - done) + (T - 1) + (1 if session is None else 0)
        model_dir, device, scale = self._model_dir(), self._device(), float(self.scale.value)
        self.controller.want_rgb = bool(self.show_pca.value)
        self._start("run", self.controller.run_job, movie, model_dir, device, scale,
                    self._tracks_layer_for, total=total, desc="Running the network",
                    on_yield=self._on_run_yield, on_return=lambda res: self._on_run_return(res, key))

    def _on_run_yield(self, msg):
        """Draw one message of a run or apply job (core.workflow)."""
        if self._closed:
            return
        if isinstance(msg, SessionReady):
            self._update_state()
            self._step(1)
        elif isinstance(msg, FrameDone):
            t = msg.t
            if msg.la is not None and self.controller.phase == Phase.RUNNING:
                self._write_pair(t, msg.la, msg.lb)
            pca = self.pca_layer
            if msg.rgb is not None and pca is not None and pca in self.viewer.layers:
                pca.data[t] = msg.rgb
                self._refresh_if_shown(pca, (t,))
                self._pca_done.add(t)
            self._step(1, "Running the network")
            self._update_state()
            self.frame_done.emit(t)
        elif isinstance(msg, TrackingStarted):
            self.controller.phase = Phase.TRACKING
        elif isinstance(msg, PairLinked):
            self._step(1, "Linking cells into tracks")

    def _on_run_return(self, res, key):
        if res is None or self._closed:
            return
        if isinstance(res, Stopped):
            self.controller.stopped()
            return
        assert isinstance(res, RunDone)
        self._showing = self._show_result(res.labels, res.lineage, res.extra, res.params)
        self._show_next()

    def _on_pause_clicked(self):
        if self.controller.phase == Phase.PAUSED:
            self.resume()
        else:
            self.pause()

    def pause(self):
        """Stop after the current frame, keeping the network's memory for :meth:`resume`."""
        if self.controller.phase == Phase.RUNNING and self._worker is not None:
            self.controller.request_stop("pause")
            self._update_state()

    def resume(self):
        """Continue a paused run from the next frame."""
        if self.controller.phase == Phase.PAUSED and self._worker is None:
            if self.session is None or self.controller.session_key != self._key():
                self.controller.phase = Phase.IDLE
                self.run()
                return
            self._launch_run()

    def cancel(self):
        """Stop the running job after its current step; what is done so far is kept."""
        if self.controller.phase == Phase.PAUSED and self._worker is None:
            self.controller.phase = Phase.IDLE
            self._update_state()
            return
        if self._worker is not None and self._job in ("run", "apply", "finetune", "estimate"):
            self.controller.request_stop("cancel")
            self._update_state()

    def _on_pca_toggled(self, on):
        self._save_settings()
        self.controller.want_rgb = bool(on)  # a running job colours its next frames
        if not on:
            if self.pca_layer is not None and self.pca_layer in self.viewer.layers:
                self.pca_layer.visible = False
                if self.viewer.layers.selection.active is self.pca_layer:
                    # a hidden layer left selected takes the user's clicks and shortcuts
                    lab = self.labels_layer
                    self.viewer.layers.selection.active = (
                        lab if lab is not None and lab in self.viewer.layers else None)
            return
        if self.session is None:
            return
        self._ensure_pca_layer()
        self._fill_pca()

    def _fill_pca(self):
        """Colour, in the background, the frames done so far that have no colours yet."""
        s = self.session
        if s is None or not self.controller.want_rgb or self._worker is not None or self.controller.phase != Phase.IDLE:
            return  # a paused run colours the rest when it has finished
        missing = [t for t in range(s.frames_done) if t not in self._pca_done]
        if missing:
            self._ensure_pca_layer()
            self._start("pca", self.controller.rgb_job, missing, total=len(missing),
                        desc="Colouring the embeddings", on_yield=self._on_pca_yield)

    def _on_pca_yield(self, msg):
        if self._closed:
            return
        t, rgb = msg.t, msg.rgb
        if self.pca_layer is not None and self.pca_layer in self.viewer.layers:
            self.pca_layer.data[t] = rgb
            self._refresh_if_shown(self.pca_layer, (t,))
            self._pca_done.add(t)
        self._step(1)
