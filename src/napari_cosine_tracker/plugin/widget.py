"""The docked "Segment and track cells" widget.

Steps, top to bottom, as a biologist works through them (one module of ``plugin/tracker/``
each, mixed into :class:`TrackerWidget`):

1. **Movie** (``tracker.movie``) -- an image layer ``(T, Y, X)`` or a file/folder opened here;
2. **Model** (``tracker.model``) -- a packaged model (chosen by the movie by default) or a
   model folder, where to run it (CPU / GPU), and the resize factor the cells need;
3. **Run** (``tracker.run``) -- frames stream through the recurrent network in a background
   thread; cells found so far appear while the rest run; Pause keeps the network's memory
   (ConvGRU state) so Resume continues where it stopped; Cancel stops and leaves everything
   usable;
4. **Cell detection** (``tracker.detection``) -- clustering parameters; a change re-labels the
   two frames under the time slider at once (debounced), "Apply to all frames" re-clusters and
   re-tracks the movie;
5. **Output** (``tracker.output``, ``tracker.output_layers``) -- a Labels layer of track ids and
   a Tracks layer (divisions, same colours); "Export" writes a Cell Tracking Challenge result;
6. **Teach the model** (``tracker.teach``) -- fine-tune the network on the corrected cells.

This module assembles the sections, wires their signals, enables what makes sense
(:meth:`TrackerWidget._update_state`) and shuts the jobs down with the window. The run's state
lives in :class:`~napari_cosine_tracker.core.workflow.RunController` (no Qt); all computation
is done by :mod:`napari_cosine_tracker.core` in napari thread workers. Exceptions in a worker
reach the user as a napari notification that names the step and the cause, and the widget
returns to a usable state.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from napari.layers import Image, Labels, Tracks
from qtpy.QtCore import QEvent, QSettings, Qt, QTimer, Signal
from qtpy.QtWidgets import QScrollArea, QVBoxLayout, QWidget

from napari_cosine_tracker.core.devices import keep_freed_memory
from napari_cosine_tracker.core.workflow import Phase, RunController

from .docking import join_as_tab
from .layers import OUTPUT_KEY, name_time_axis
from .tracker.common import (
    DEVICES,
    MODEL_AUTO,
    MODEL_FOLDER,
    MODEL_SHIPPED,
    SETTINGS_APP,
    SETTINGS_ORG,
    TrackingError,
    note,
    warm_done,
    warm_up,
)
from .tracker.detection import DetectionSection
from .tracker.jobs import Jobs
from .tracker.model import ModelSection
from .tracker.movie import MovieSection
from .tracker.output import OutputSection
from .tracker.output_layers import OutputLayers
from .tracker.run import RunSection
from .tracker.settings import Settings
from .tracker.teach import TeachSection

if TYPE_CHECKING:
    import napari

__all__ = ["TrackerWidget", "TrackingError", "DEVICES", "MODEL_AUTO", "MODEL_FOLDER",
           "MODEL_SHIPPED", "OUTPUT_KEY", "warm_done"]


class TrackerWidget(MovieSection, ModelSection, RunSection, DetectionSection, OutputSection,
                    TeachSection, OutputLayers, Jobs, Settings, QWidget):
    """Segment and track cells in a 2-D time-lapse, with live tuning of the cell detection."""

    #: Emitted on the GUI thread after frame ``t`` went through the network and is shown.
    frame_done = Signal(int)
    #: Emitted when a background job ends: its name ("run", "apply", "export", "pca") and
    #: whether it completed (False: failed, paused or cancelled).
    job_finished = Signal(str, bool)

    def __init__(self, napari_viewer: napari.viewer.Viewer, settings: QSettings | None = None):
        super().__init__()
        # Here, on the main thread: the worker threads started later then reuse freed memory too.
        keep_freed_memory()
        self.viewer = napari_viewer
        self._settings = settings or QSettings(SETTINGS_ORG, SETTINGS_APP)
        # the run itself (session, phase, lock, stop flag, jobs) lives outside the widget
        self._auto_cache = None  # (movie key, (model name, why)) of the automatic choice
        self.controller = RunController()
        self.controller.connect(self._on_phase)
        self._worker = None            # the one heavy worker (run / apply / export / pca)
        self._job = None
        self._pbar = None
        self._pbar_pending = 0         # steps not yet passed on to napari's progress bar
        self._pbar_last = 0.0          # time.monotonic() of its last update
        self._pbar_desc = None         # description napari's bar should show
        self._showing = None           # generator showing a result step by step
        self._finish_pending = False   # the job ended while its result was being shown
        self._closed = False           # the viewer (or this widget) has gone: ignore late events
        self._model_params_cache = None  # (model folder, its recommended ClusterParams)
        self._model_key_cache = (None, "none")  # (weights path, size, mtime), their hash
        # top-level window whose closing stops the jobs (weak: it holds napari's QtViewer)
        self._watched_window = lambda: None
        self._live_worker = None
        self._live_again = False
        self._measured = None          # _measure_key() of the last cell-size measurement
        self._estimate = (None, None)  # (_measure_key(), ScaleEstimate) of the running one
        self._setting_scale = False    # the widget, not the user, is setting the scale
        self._after_job = None         # started when the current job completes
        self._stale = False            # labels show a live re-clustering, not a full tracking
        self._tracked = False          # the labels layer holds a full tracking result
        self._next_preview_id = 1
        self._run_name = "movie"       # name of the movie the output layers belong to
        self._pca_done = set()         # frames whose embedding colours are shown
        self._last_error = None        # shown until the next job starts
        self._applied_params = None    # parameters of the full tracking on display
        self._backup = {}              # t -> tracked frame replaced by a live preview
        self.labels_layer: Labels | None = None
        self.tracks_layer: Tracks | None = None
        self.pca_layer: Image | None = None

        self._build()
        self._load_settings()
        # read by the workers (never touch widgets off the GUI thread)
        self.controller.params = self.params()
        self.controller.daughter_ratio = float(self.daughter_ratio.value)
        self._connect()
        self._refresh_movies()
        name_time_axis(self.viewer)
        self._update_state()
        # napari sends no closeEvent to dock-widget contents: watch the window (see showEvent)
        # and, as a last resort, this widget's destruction (a weak reference: a strong one
        # would keep the widget, and with it the viewer, alive)
        ref = weakref.ref(self)
        self.destroyed.connect(lambda *_: (w := ref()) is not None and w.shutdown())
        warm_up()

    def _on_phase(self, _phase):
        if not self._closed:  # Qt objects may be gone once the widget is closed
            self._update_state()

    @property
    def session(self):
        """The run's :class:`~napari_cosine_tracker.core.pipeline.TrackingSession` (or None)."""
        return self.controller.session

    @session.setter
    def session(self, value):
        self.controller.session = value

    # ------------------------------------------------------------------------------------
    # Layout and wiring
    # ------------------------------------------------------------------------------------
    def _build(self):
        intro = note("Finds every cell in each frame of a time-lapse and follows it over time, "
                     "including divisions. Work from top to bottom; hover over any control for "
                     "help.")
        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.addWidget(intro)
        for section in (self._build_movie(), self._build_model(), self._build_run(),
                        self._build_detection(), self._build_output(), self._build_teach()):
            lay.addWidget(section)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setWidget(inner)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        self.setMinimumWidth(380)
        # long layer names and paths must not widen the dock: let combo boxes elide
        for combo in (self.movie_combo, self.model_source, self.device):
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.native.setMinimumContentsLength(10)
        self.model_folder.line_edit.native.setMinimumWidth(60)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(250)

    def _connect(self):
        self.movie_combo.changed.connect(self._on_movie_changed)
        self.model_source.changed.connect(self._on_model_changed)
        self.model_folder.changed.connect(self._on_model_changed)
        self.device.changed.connect(self._on_model_changed)
        self.scale.changed.connect(self._on_model_changed)
        self.scale.changed.connect(self._on_scale_typed)
        self.auto_scale.changed.connect(lambda *_: self._save_settings())
        self.run_button.clicked.connect(self.run)
        self.estimate_button.clicked.connect(self.estimate_scale)
        self.pause_button.clicked.connect(self._on_pause_clicked)
        self.cancel_button.clicked.connect(self.cancel)
        self.show_pca.changed.connect(self._on_pca_toggled)
        for w in self.param_widgets.values():
            w.changed.connect(self._on_params_changed)
        self.daughter_ratio.changed.connect(self._on_track_params_changed)
        self.apply_button.clicked.connect(self.apply_to_all)
        self.defaults_button.clicked.connect(self.reset_params)
        self.export_button.clicked.connect(self._export_dialog)
        self.finetune_button.clicked.connect(self._fine_tune_dialog)
        self._debounce.timeout.connect(self.relabel_current)
        self.viewer.dims.events.current_step.connect(self._on_time_changed)
        ev = self.viewer.layers.events
        for e in (ev.removed, ev.reordered):
            e.connect(self._refresh_movies)
        ev.inserted.connect(self._on_layer_inserted)

    def _update_state(self):
        """Enable what makes sense now and say why the rest is off."""
        busy = self._worker is not None
        movie, movie_msg = self._check_movie()
        model_ok, model_msg = self._describe_model()
        self.model_folder.visible = self.model_source.value == MODEL_FOLDER
        self.model_info.setText(model_msg)
        same = self.session is not None and self.controller.session_key == self._key()
        T = self.session.n_frames if same else (movie.shape[0] if movie is not None else 0)
        done = self.session.frames_done if same else 0
        can_run = movie is not None and model_ok
        self.run_button.setEnabled(can_run and self.controller.phase in (Phase.IDLE,))
        if self.controller.phase == Phase.PAUSED:
            self.run_button.setText("Run")  # Resume is the one way on; no second counter here
        elif same and 0 < done < T:
            self.run_button.setText(f"Continue from frame {done}")  # 0-based, as the slider
        elif same and done == T:
            self.run_button.setText("Run again")
        else:
            self.run_button.setText("Run")
        self.pause_button.setEnabled(self.controller.phase in (Phase.RUNNING, Phase.PAUSED)
                                     and self.controller.stop_reason is None)
        self.pause_button.setText("Resume" if self.controller.phase == Phase.PAUSED else "Pause")
        self.cancel_button.setEnabled(self.controller.phase in (Phase.RUNNING, Phase.PAUSED, Phase.TRACKING, Phase.TRAINING,
                                                       Phase.ESTIMATING)
                                      and self.controller.stop_reason != "cancel")
        self.movie_combo.enabled = not busy and self.controller.phase != Phase.PAUSED
        self.open_button.setEnabled(not busy and self.controller.phase != Phase.PAUSED)
        self.model_box.enabled = not busy and self.controller.phase != Phase.PAUSED
        self.estimate_button.setEnabled(movie is not None and model_ok and not busy
                                        and self.controller.phase == Phase.IDLE)
        complete = same and done == T
        self.apply_button.setEnabled(complete and not busy)
        self.apply_button.setToolTip(
            "Find the cells in every frame with these settings and link them into tracks "
            "again." if complete else "Available once the network has seen every frame.")
        self.export_button.setEnabled(self._tracked and not self._stale and not busy
                                      and self.labels_layer is not None
                                      and self.labels_layer in self.viewer.layers)
        self.finetune_button.setEnabled(self.export_button.isEnabled() and movie is not None
                                        and self.controller.phase == Phase.IDLE)
        if self.session is None:
            self.run_info.setText("Not run yet.")
        elif not same and self.controller.phase == Phase.IDLE:
            self.run_info.setText("Movie, model or device changed: Run starts from the first "
                                  "frame.")
        else:
            # the same words as the progress bar's: frames through the network, of all
            state = f"{done} of {T} frames through the network"
            extra = {"running": " — running", "paused": " — paused",
                     "tracking": " — linking cells into tracks",
                     "exporting": " — exporting"}.get(self.controller.phase.value, "")
            if self.controller.stop_reason == "pause":
                extra = " — pausing after this frame…"
            elif self.controller.stop_reason == "cancel":
                extra = " — stopping after this frame…"
            self.run_info.setText(state + extra)
        if self._last_error and self._worker is None:
            self.run_info.setText(f"<span style='color:#ff7b72'>Stopped: {self._last_error}</span>"
                                  "<br>Fix the cause above and press Run again.")

    # ------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------
    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.shutdown()
        super().closeEvent(event)

    _cosine_tracker_panel = True  # see docking.PANEL_MARKER

    def showEvent(self, event):  # noqa: N802 - Qt name
        # docked now (or re-docked): follow the window this widget lives in
        self._closed = False  # shown again after a close: usable again
        join_as_tab(self)  # beside the plugin's other panels, as a tab
        win, old = self.window(), self._watched_window()
        if win is not self and win is not old:
            if old is not None:
                old.removeEventFilter(self)
            win.installEventFilter(self)
            self._watched_window = weakref.ref(win)
        super().showEvent(event)

    def eventFilter(self, obj, event):  # noqa: N802 - Qt name
        if event.type() == QEvent.Type.Close and obj is self._watched_window():
            if event.spontaneous():
                # the user may still refuse napari's "close the window?" question: look
                # again once the close has been decided
                QTimer.singleShot(0, self._shutdown_if_window_closed)
            else:  # viewer.close(): napari closes without asking
                self.shutdown()
        return super().eventFilter(obj, event)

    def _shutdown_if_window_closed(self):
        win = self._watched_window()
        if win is not None and not win.isVisible():
            self.shutdown()

    def shutdown(self):
        """Stop running jobs after their current step; the widget is then idle for good.

        Runs when the viewer's window closes (or this widget does / is deleted). The worker
        threads end after their current frame; late results from them are ignored.
        """
        if self._closed:
            return
        self._closed = True
        self.controller.disconnect(self._on_phase)
        self.controller.request_stop(self.controller.stop_reason or "cancel")
        for w in (self._worker, self._live_worker):
            if w is not None:
                w.quit()
        pbar, self._pbar = self._pbar, None
        self._worker = self._live_worker = self._showing = None
        self._job, self.controller.phase, self._finish_pending = None, Phase.IDLE, False
        try:  # Qt objects may already be deleted (destroyed signal)
            self._debounce.stop()
            if pbar is not None:
                pbar.close()
        except RuntimeError:
            pass
