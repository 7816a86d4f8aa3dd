"""The docked "Segment and track cells" widget.

Steps, top to bottom, as a biologist works through them:

1. **Movie** -- an image layer ``(T, Y, X)`` or a file/folder opened here;
2. **Model** -- the shipped model or a model folder, and where to run it (CPU / GPU);
3. **Run** -- frames stream through the recurrent network in a background thread; cells found
   so far appear while the rest run; Pause keeps the network's memory (ConvGRU state) so Resume
   continues where it stopped; Cancel stops and leaves everything usable;
4. **Cell detection** -- clustering parameters; a change re-labels the two frames under the
   time slider at once (debounced), "Apply to all frames" re-clusters and re-tracks the movie;
5. **Output** -- a Labels layer of track ids and a Tracks layer (divisions, same colours);
   "Export" writes a Cell Tracking Challenge result folder.

All computation is done by :mod:`napari_cosine_tracker.core` (``TrackingSession``) in napari
thread workers; this module only moves data between the session and layers. Exceptions in a
worker reach the user as a napari notification that names the step and the cause, and the
widget returns to a usable state.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, SpinBox
from napari.layers import Image, Labels, Tracks
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.colormaps import label_colormap
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QEvent, QSettings, Qt, QTimer, Signal
from qtpy.QtWidgets import (
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMenu,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from napari_cosine_tracker.core.cluster import ClusterParams
from napari_cosine_tracker.core.devices import keep_freed_memory
from napari_cosine_tracker.core.io import MovieError, as_movie
from napari_cosine_tracker.core.paramspec import specs
from napari_cosine_tracker.core.track import TrackParams
from napari_cosine_tracker.core.workflow import (
    FrameDone,
    PairLinked,
    Phase,
    RunController,
    RunDone,
    SessionReady,
    StepError,
    Stopped,
    TrackingStarted,
    step_error,
)
from napari_cosine_tracker.core.zoo import (
    DEFAULT_MODEL,
    choose_model,
    list_models,
    resolve_model,
)

from .docking import join_as_tab
from .layers import (
    CORRECTING_KEY,
    LINEAGE_KEY,
    contrast_limits,
    name_time_axis,
    tracks_from_labels,
    tracks_layer_kwargs,
)
from .params_form import ParamsForm

if TYPE_CHECKING:
    import napari

__all__ = ["TrackerWidget", "TrackingError"]

SETTINGS_ORG = "napari-cosine-tracker"
#: metadata key marking the layers this widget makes (never offered as a movie)
OUTPUT_KEY = "cosine_tracker_output"
SETTINGS_APP = "tracker-widget"

DEVICES = {"Automatic": "auto", "CPU": "cpu", "CUDA (NVIDIA GPU)": "cuda", "MPS (Apple GPU)": "mps"}
#: the packaged model that runs when no movie tells which (a name of the zoo)
MODEL_SHIPPED = DEFAULT_MODEL
MODEL_FOLDER = "Model folder"
#: the picker's default: the packaged model that suits the movie (core.zoo.choose_model)
MODEL_AUTO = "Automatic (by the movie)"
#: seconds between updates of napari's progress bar (each costs tens of ms on the GUI thread)
PROGRESS_INTERVAL_S = 0.5

#: A background step failed (the message names the step and the cause); see core.workflow.
TrackingError = StepError


_warm = threading.Event()
warm_done = threading.Event()  # set when the warm-up below has finished (tests wait on it)


def _warm_up():
    """Import the pipeline and cluster a tiny pair once, in the background.

    The first clustering of a process compiles HDBSCAN's numba code (tens of seconds on a busy
    laptop); doing it while the user picks a movie keeps the first frames of a run fluid.
    """
    if _warm.is_set():
        return
    _warm.set()

    def work():
        try:
            _pipeline()
            from napari_cosine_tracker.core.cluster import cluster_pair, synthetic_embeddings

            yy, xx = np.mgrid[:48, :48]
            lab = ((yy - 24) ** 2 + (xx - 16) ** 2 < 80).astype(np.int32)
            lab[(yy - 24) ** 2 + (xx - 34) ** 2 < 80] = 2
            emb = synthetic_embeddings(lab, dim=4)
            cluster_pair(emb, emb)
            # Start the child process that builds HDBSCAN trees during runs (see treeproc).
            from napari_cosine_tracker.core.cluster import PairClustering
            from napari_cosine_tracker.core.treeproc import shared_tree_process

            PairClustering(emb, emb, tree_process=shared_tree_process()).run()
            # napari's first Labels layer of a process costs ~1 s (class set-up, the
            # colormap's numba code); pay it here rather than when Run is pressed.
            from .napari_private import warm_up_labels_rendering

            warm_up_labels_rendering()
        except Exception:  # only an optimisation; real errors show up in the run
            pass
        finally:
            warm_done.set()

    threading.Thread(target=work, name="cosine-tracker-warm-up", daemon=True).start()


def _pipeline():
    # Imported on first use: keeps opening the widget fast (torch loads with it).
    from napari_cosine_tracker.core import pipeline

    return pipeline


def _group(title: str, *widgets) -> QGroupBox:
    box = QGroupBox(title)
    lay = QVBoxLayout(box)
    lay.setContentsMargins(6, 6, 6, 6)
    for w in widgets:
        if isinstance(w, QWidget):
            lay.addWidget(w)
        elif hasattr(w, "native"):
            lay.addWidget(w.native)
        else:
            lay.addLayout(w)
    return box


def _note(text: str = "") -> QLabel:
    lab = QLabel(text)
    lab.setWordWrap(True)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return lab


class TrackerWidget(QWidget):
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
        _warm_up()

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
    # Layout
    # ------------------------------------------------------------------------------------
    def _build(self):
        intro = _note("Finds every cell in each frame of a time-lapse and follows it over time, "
                      "including divisions. Work from top to bottom; hover over any control for "
                      "help.")

        # 1 Movie
        self.movie_combo = ComboBox(label="Movie", choices=self._movie_choices,
                                    tooltip="The time-lapse to track: an image layer with time as "
                                            "its first axis (frames, height, width).")
        self.open_button = QToolButton()
        self.open_button.setText("Open…")
        self.open_button.setToolTip("Open a movie from disk: a multi-page TIFF, or a folder of "
                                    "TIFF frames such as a Cell Tracking Challenge sequence (01/).")
        self.open_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.open_button)
        menu.addAction("Multi-page TIFF file…", self._open_file_dialog)
        menu.addAction("Folder of TIFF frames…", self._open_folder_dialog)
        self.open_button.setMenu(menu)
        row = QHBoxLayout()
        row.addWidget(Container(widgets=[self.movie_combo]).native, 1)
        row.addWidget(self.open_button)
        self.movie_info = _note()

        # 2 Model
        self.model_source = ComboBox(label="Model",
                                     choices=[MODEL_AUTO] + [m.name for m in list_models()]
                                     + [MODEL_FOLDER],
                                     value=MODEL_AUTO,
                                     tooltip="The trained network that colours each cell. "
                                             "Automatic picks by the movie: label-free for a "
                                             "bright background (DIC, phase contrast), else "
                                             "fluorescence. "
                                             + "; ".join(f"{m.name}: {m.description}"
                                                         for m in list_models())
                                             + " Or a folder with a model trained on your "
                                               "own data.")
        self.model_folder = FileEdit(label="Folder", mode="d",
                                     tooltip="Folder with weights.safetensors and config.json.")
        self.device = ComboBox(label="Run on", choices=list(DEVICES), value="Automatic",
                               tooltip="Where the network runs. Automatic picks a graphics card "
                                       "(GPU) when there is one, which is much faster.")
        self.scale = FloatSpinBox(label="Resize frames by", value=1.0, min=0.1, max=10.0, step=0.1,
                                  tooltip="The shipped model knows nuclei about 50-60 pixels "
                                          "across. For cells half that size use 2, for cells "
                                          "twice that size 0.5. Changing it runs the network "
                                          "again.")
        self.model_box = Container(widgets=[self.model_source, self.model_folder, self.device,
                                            self.scale])
        self.auto_scale = CheckBox(text="Measure the cells before a new run",
                                   tooltip="On a movie or model not measured yet, Run first "
                                           "measures the cells and sets “Resize frames by”. "
                                           "Typing a factor yourself turns this off.")
        self.estimate_button = QPushButton("Measure the cells")
        self.estimate_button.setToolTip("Run the network on a few frames from the middle of "
                                        "the movie, measure the cells it finds and set “Resize "
                                        "frames by” so they come out the size the model knows. "
                                        "A few seconds.")
        self.scale_info = _note("Not sure how large your cells are for the model? "
                                "Measure the cells.")
        self.model_info = _note()

        # 3 Run
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
        self.run_info = _note()
        self.show_pca = CheckBox(text="Show embedding colours",
                                 tooltip="Adds a colour image in which each cell should have "
                                         "its own colour and the background is dark. Cells "
                                         "sharing a colour are hard to separate.")

        # 4 Cell detection
        # rows built from ClusterParams' own metadata, as the command line's flags are
        self.params_box = ParamsForm(ClusterParams)
        self.param_widgets = {s.name: self.params_box[s.name] for s in specs(ClusterParams)}
        # A tracking setting, not a clustering one: it shows with "Apply to all frames".
        self.daughter_ratio = FloatSpinBox(
            label="Smallest daughter (× sister)", min=0.0, max=0.95, step=0.05,
            value=TrackParams().min_daughter_ratio,
            tooltip="A cell that splits into a piece smaller than this fraction of the other\n"
                    "is a fragment breaking off, not a division: the larger piece keeps the track.\n"
                    "Lower it (0 = every split) for cells that divide unequally, e.g. budding.\n"
                    "Used when the cells are linked: press “Apply to all frames” after changing it.")
        self.params_box.append(self.daughter_ratio)
        self.apply_button = QPushButton("Apply to all frames")
        self.apply_button.setToolTip("Find the cells in every frame with these settings and "
                                     "link them into tracks again.")
        self.defaults_button = QPushButton("Defaults")
        self.defaults_button.setToolTip("Back to the recommended settings.")
        prow = QHBoxLayout()
        prow.addWidget(self.apply_button, 1)
        prow.addWidget(self.defaults_button)
        self.params_info = _note("Changes show at once on the two frames under the time "
                                 "slider.")

        # 5 Output
        self.export_button = QPushButton("Export CTC result…")
        self.export_button.setToolTip("Save the tracked cells as a Cell Tracking Challenge "
                                      "result folder: one mask image per frame (maskTTT.tif) "
                                      "and the lineage (res_track.txt).")
        self.output_info = _note()

        # 6 Teach the model
        self.finetune_steps = SpinBox(label="Training steps", value=200, min=1, max=100_000, step=50,
                                      tooltip="How long to train: each step shows the network a "
                                              "few frames of this movie (or of a built-in "
                                              "synthetic one, so it keeps what it knew). About "
                                              "2 s a step on two CPU cores, far less on a GPU.")
        self.finetune_button = QPushButton("Fine-tune on these cells…")
        self.finetune_button.setToolTip("Train the current model further on this movie and its "
                                        "cells as they are now (corrections included), save it "
                                        "as a new model folder and switch to it. Cancel stops "
                                        "early and keeps what was learnt.")
        self.finetune_info = _note("After correcting the cells, let the model learn from them; "
                                   "then Run again with the new model.")

        inner = QWidget()
        lay = QVBoxLayout(inner)
        lay.addWidget(intro)
        lay.addWidget(_group("1 · Movie", row, self.movie_info))
        lay.addWidget(_group("2 · Model", self.model_box, self.auto_scale.native,
                             self.estimate_button, self.scale_info, self.model_info))
        lay.addWidget(_group("3 · Find and follow cells", buttons, self.progress_bar,
                             self.run_info, self.show_pca))
        lay.addWidget(_group("4 · Cell detection (live)", self.params_box, prow,
                             self.params_info))
        lay.addWidget(_group("5 · Output", self.export_button, self.output_info))
        lay.addWidget(_group("6 · Teach the model", Container(widgets=[self.finetune_steps]).native,
                             self.finetune_button, self.finetune_info))
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

    # ------------------------------------------------------------------------------------
    # Settings
    # ------------------------------------------------------------------------------------
    def _load_settings(self):
        s = self._settings
        src = s.value("model/source")
        if src in self.model_source.choices:
            self.model_source.value = src
        folder = s.value("model/folder")
        if folder:
            self.model_folder.value = folder
        dev = s.value("model/device")
        if dev in DEVICES:
            self.device.value = dev
        try:
            self.scale.value = min(10.0, max(0.1, float(s.value("model/scale", 1.0))))
        except (TypeError, ValueError):
            pass
        self.show_pca.value = str(s.value("view/show_pca", "false")).lower() == "true"
        self.auto_scale.value = str(s.value("model/auto_scale", "true")).lower() == "true"
        try:
            self.daughter_ratio.value = min(0.95, max(0.0, float(
                s.value("tracking/min_daughter_ratio", TrackParams().min_daughter_ratio))))
        except (TypeError, ValueError):
            pass
        self._params_key = self._model_key()
        self._restore_params()

    def _model_key(self) -> str:
        """Clustering settings are remembered per model: settings tuned for one network mean
        little for another (an upgraded shipped model included). The key is a hash of the
        weights, so the same model in another folder keeps its settings."""
        import hashlib

        weights = self._model_dir() / "weights.safetensors"
        try:
            st = weights.stat()
        except OSError:
            return "none"
        stamp = (str(weights), st.st_size, st.st_mtime_ns)
        if self._model_key_cache[0] != stamp:
            digest = hashlib.sha256()
            with open(weights, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
            self._model_key_cache = (stamp, digest.hexdigest()[:16])
        return self._model_key_cache[1]

    def _restore_params(self):
        """The settings last used with the chosen model, else its recommendations."""
        # Read them all before setting any: each change saves every widget's value.
        saved = {name: self._settings.value(f"params/{self._params_key}/{name}")
                 for name in self.param_widgets}
        if all(v is None for v in saved.values()):
            self._reset_cluster_params()  # the division setting is not per model
            return
        for name, w in self.param_widgets.items():
            if saved[name] is not None:
                try:
                    w.value = float(saved[name]) if isinstance(w.value, float) else int(float(saved[name]))
                except (TypeError, ValueError):
                    pass

    def _save_settings(self):
        s = self._settings
        for name, w in self.param_widgets.items():
            s.setValue(f"params/{self._params_key}/{name}", w.value)
        s.setValue("model/source", self.model_source.value)
        s.setValue("model/folder", str(self.model_folder.value))
        s.setValue("model/device", self.device.value)
        s.setValue("model/scale", float(self.scale.value))
        s.setValue("view/show_pca", bool(self.show_pca.value))
        s.setValue("model/auto_scale", bool(self.auto_scale.value))
        s.setValue("tracking/min_daughter_ratio", float(self.daughter_ratio.value))
        s.sync()

    # ------------------------------------------------------------------------------------
    # Current choices
    # ------------------------------------------------------------------------------------
    def _movie_choices(self, *_):
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and OUTPUT_KEY not in layer.metadata]

    def _refresh_movies(self, *_):
        self.movie_combo.reset_choices()
        self._on_movie_changed()

    def _on_layer_inserted(self, event):
        name_time_axis(self.viewer)
        self.movie_combo.reset_choices()
        layer = getattr(event, "value", None)
        # a movie just opened is the one the user wants to track (unless a run is on)
        if isinstance(layer, Image) and OUTPUT_KEY not in layer.metadata and \
                self._worker is None and self.controller.phase == Phase.IDLE:
            self.movie_combo.value = layer
        self._on_movie_changed()

    def reset_choices(self, *_):  # napari calls this when layers change
        self._refresh_movies()

    @property
    def movie_layer(self) -> Image | None:
        return self.movie_combo.value

    def params(self) -> ClusterParams:
        """The clustering parameters shown in the widget, over the model's recommendations
        for those it does not show."""
        return replace(self._model_params(), **{n: w.value for n, w in self.param_widgets.items()})

    def _model_params(self) -> ClusterParams:
        """The chosen model's recommended clustering parameters (built-in defaults if none)."""
        from napari_cosine_tracker.core.model import ModelError, read_model_config

        folder = self._model_dir()
        if self._model_params_cache is None or self._model_params_cache[0] != str(folder):
            defaults = ClusterParams()
            try:
                defaults = _pipeline().default_params(read_model_config(folder))[0]
            except (ModelError, ImportError, TypeError, ValueError, OSError):
                pass
            self._model_params_cache = (str(folder), defaults)
        return self._model_params_cache[1]

    def _check_movie(self):
        """(movie, None) or (None, message) for the selected layer; reads no pixels."""
        layer = self.movie_layer
        if layer is None:
            return None, "Choose an image layer, or open a movie with Open…"
        if getattr(layer, "rgb", False):
            return None, (f"“{layer.name}” is a colour (RGB) image. The tracker needs one "
                          "grey-level channel: split the channels (right-click the layer) and "
                          "pick the nuclear one.")
        if getattr(layer, "multiscale", False):
            return None, (f"“{layer.name}” is a multi-resolution image; open the "
                          "full-resolution movie.")
        data = layer.data
        if data.ndim == 2:
            return None, (f"“{layer.name}” is a single image "
                          f"({data.shape[0]} × {data.shape[1]}). "
                          "Tracking needs a movie: frames × height × width.")
        if data.ndim != 3:
            return None, (f"“{layer.name}” has {data.ndim} dimensions {tuple(data.shape)}. "
                          "Tracking needs frames × height × width: for a 3-D or multichannel "
                          "movie, keep one channel or plane (or a projection) first.")
        try:
            movie = as_movie(data, name=layer.name)
        except MovieError as e:
            return None, str(e)
        if movie.shape[0] < 2:
            return None, f"“{layer.name}” has a single frame; tracking needs at least two."
        return movie, None

    def _model_dir(self) -> Path:
        if self.model_source.value == MODEL_FOLDER:
            return Path(self.model_folder.value)
        if self.model_source.value == MODEL_AUTO:
            return resolve_model(self._auto_model()[0])
        return resolve_model(self.model_source.value)

    def _auto_model(self) -> tuple[str, str]:
        """The packaged model for the chosen movie and why (cached per movie data)."""
        layer = self.movie_layer
        key = (id(layer), id(getattr(layer, "data", None)))
        if self._auto_cache is None or self._auto_cache[0] != key:
            movie, msg = self._check_movie()
            try:
                choice = ((DEFAULT_MODEL, "no movie chosen yet") if movie is None
                          else choose_model(movie))
            except (MovieError, OSError, ValueError) as e:  # a bad frame: the run will say
                choice = (DEFAULT_MODEL, f"its frames could not be read to choose ({e})")
            self._auto_cache = (key, choice)
        return self._auto_cache[1]

    def _device(self) -> str:
        return DEVICES[self.device.value]

    def _key(self):
        layer = self.movie_layer
        return (id(layer), id(getattr(layer, "data", None)), str(self._model_dir()),
                self._device(), float(self.scale.value))

    # ------------------------------------------------------------------------------------
    # Reactions to the user
    # ------------------------------------------------------------------------------------
    def _on_movie_changed(self, *_):
        if self.model_source.value == MODEL_AUTO and self._model_key() != self._params_key:
            self._on_model_changed()  # another movie, another model: its settings
        movie, msg = self._check_movie()
        if msg:
            self.movie_info.setText(f"<span style='color:#ff7b72'>{msg}</span>")
        else:
            T, Y, X = movie.shape
            self.movie_info.setText(f"{T} frames of {Y} × {X} pixels ({movie.dtype}).")
        self._update_state()

    def _on_model_changed(self, *_):
        key = self._model_key()
        if key != self._params_key:  # another network: the settings last used with it
            self._params_key = key
            self._restore_params()
        self._save_settings()
        self._update_state()

    def _describe_model(self):
        from napari_cosine_tracker.core.devices import describe_devices, resolve_device

        if self.model_source.value == MODEL_FOLDER:
            d = self._model_dir()
            ok = (d / "weights.safetensors").is_file() and (d / "config.json").is_file()
            where = (f"Model folder {d}." if ok else
                     f"<span style='color:#ff7b72'>{d} has no weights.safetensors + "
                     "config.json; choose a model folder</span>")
        else:
            name = self.model_source.value
            chosen = ""
            if name == MODEL_AUTO:
                name, why = self._auto_model()
                chosen = f"<b>{name}</b> for this movie ({why}). "
            entry = next(m for m in list_models() if m.name == name)
            ok = entry.available
            where = (chosen + entry.description if ok else
                     f"<span style='color:#ff7b72'>The {entry.name} model is missing from this "
                     "installation; choose a model folder.</span>")
        found = f"Devices found: {describe_devices()}."
        try:
            resolve_device(self._device())
        except ValueError:
            ok = False
            found += (f" <span style='color:#ff7b72'>No {self.device.value} on this computer: "
                      "choose Automatic or CPU.</span>")
        if self.session is not None and self.controller.session_key == self._key():
            found += f" Running on {self.session.device_description}."
        return ok, f"{where}<br>{found}"

    def _on_params_changed(self, *_):
        self.controller.params = self.params()
        self._save_settings()
        if self.session is not None and self.controller.phase != Phase.TRACKING:
            self._debounce.start()

    def _on_track_params_changed(self, *_):
        self.controller.daughter_ratio = float(self.daughter_ratio.value)
        self._save_settings()
        if self._tracked:
            self.params_info.setText("Press “Apply to all frames” to link the cells again with "
                                     "the new division setting.")

    def _on_time_changed(self, *_):
        if self._stale and self.session is not None:
            self._debounce.start()

    def reset_params(self):
        """"Defaults": back to the settings recommended for the chosen model (or the built-in
        defaults), the division setting included."""
        self._reset_cluster_params()
        self.daughter_ratio.value = TrackParams().min_daughter_ratio

    def _reset_cluster_params(self):
        self._model_params_cache = None  # the folder's config may have been re-tuned
        defaults = self._model_params()
        for name, w in self.param_widgets.items():
            w.value = getattr(defaults, name)

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
    # Opening movies
    # ------------------------------------------------------------------------------------
    def _open_file_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Open a time-lapse movie", "",
                                              "TIFF movies (*.tif *.tiff)")
        if path:
            self.open_movie(path)

    def _open_folder_dialog(self):
        path = QFileDialog.getExistingDirectory(self, "Open a folder of TIFF frames")
        if path:
            self.open_movie(path)

    def open_movie(self, path) -> Image | None:
        """Open a movie file or folder as an image layer and select it (frames stay on disk)."""
        from napari_cosine_tracker.core.io import read_movie

        try:
            movie = read_movie(path)
        except MovieError as e:
            self.movie_info.setText(f"<span style='color:#ff7b72'>{e}</span>")
            show_warning(f"Could not open the movie: {e}")
            return None
        p = Path(path)
        layer = self.viewer.add_image(movie, name=p.name if p.is_dir() else p.stem,
                                      contrast_limits=contrast_limits(movie),
                                      metadata={"source_path": str(p)})
        self.movie_combo.value = layer
        return layer

    # ------------------------------------------------------------------------------------
    # Background work plumbing
    # ------------------------------------------------------------------------------------
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

    # ------------------------------------------------------------------------------------
    # Cell size: the resize factor from the model's own cells (core.cellsize)
    # ------------------------------------------------------------------------------------
    def estimate_scale(self):
        """Measure the cells in a few frames of the movie and set *Resize frames by* so they
        come out the size the model was trained on. Runs in the background; Cancel stops it."""
        from napari_cosine_tracker.core.cellsize import iter_estimate_scale

        if self.controller.phase != Phase.IDLE or self._worker is not None:
            return None
        movie, msg = self._check_movie()
        if msg:
            show_warning(msg)
            return None
        layer = self.movie_layer
        movie = as_movie(layer.data, name=layer.name)
        model_dir, device, rounds = self._model_dir(), self._device(), 6
        self._estimate = (self._measure_key(), None)
        self.controller.phase = Phase.ESTIMATING

        def job():
            try:
                steps = iter_estimate_scale(movie, model_dir, device=device, max_rounds=rounds,
                                            tree_process=True)
                while True:
                    try:
                        step = next(steps)
                    except StopIteration as stop:
                        # shown by _on_finished (_show_estimate), after the last step
                        self._estimate = (self._estimate[0], stop.value)
                        return
                    yield step
                    if self.controller.stop.is_set():
                        return
            except Exception as e:
                raise step_error("Measuring the cells failed", e) from e

        def shown(step):
            if self._job != "estimate" or self._estimate[0] is None:  # the result is shown
                return
            self.scale_info.setText(f"Trying {step[0]:.2f}: cells {step[1]:.0f} model pixels "
                                    f"across ({step[2]} cells)…")
            # last: napari's progress bar may process pending events, the job's end included
            self._step(1)

        return self._start("estimate", job, total=2 * rounds, desc="Measuring the cells",
                           on_yield=shown)

    def _show_estimate(self):
        """The measured cell size, once the estimate job has ended (on the GUI thread)."""
        key, est = self._estimate
        self._estimate = (None, None)  # first: late progress steps are dropped from now on
        if est is None:
            self.scale_info.setText("Stopped; “Resize frames by” is unchanged.")
            return
        self.scale_info.setText(est.describe())
        self._measured = key  # measured, even where no cells were found
        if np.isfinite(est.cell_diameter):  # cells were found
            self._setting_scale = True  # not the user typing: keep auto_scale
            try:
                self.scale.value = round(est.scale, 2)  # within the spin box's range
            finally:
                self._setting_scale = False

    def _measure_key(self):
        """What a measured cell size holds for: this movie's data with this model."""
        return self._key()[:3]  # movie layer, its data, model: not device or scale

    def _on_scale_typed(self, *_):
        if not self._setting_scale:  # the user chose a factor: keep it
            self.auto_scale.value = False

    # ------------------------------------------------------------------------------------
    # Run: model + preview + tracking
    # ------------------------------------------------------------------------------------
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

    def _tracks_layer_for(self, labels, lineage) -> Tracks | None:
        """Worker: the Tracks layer of a result, built here so the GUI thread only adds it.

        Building it (centroids, graph, napari's track manager) takes a few hundred ms.
        """
        tracks = tracks_from_labels(labels)
        if not len(tracks):
            return None
        lab = self.labels_layer
        cmap = lab.colormap if lab is not None else label_colormap()
        # on the labels' scale, so track lines run through their cells
        geometry = ({"scale": tuple(lab.scale[-3:]), "translate": tuple(lab.translate[-3:])}
                    if lab is not None else {})
        return Tracks(tracks, **tracks_layer_kwargs(tracks, lineage, self._run_name, cmap,
                                                    self._output_metadata("tracks"), **geometry))

    def _release_corrected_layers(self) -> bool:
        """Leave output layers that the correction widget is editing to it: new results then
        go into new layers, never over the user's corrections. True if released."""
        lab = self.labels_layer
        if lab is None or not lab.metadata.get(CORRECTING_KEY):
            return False
        show_info(f"“{lab.name}” is being corrected: the new result goes into a new layer.")
        self.labels_layer = self.tracks_layer = None
        self._backup.clear()
        self._tracked = self._stale = False
        return True

    def _output_metadata(self, kind: str) -> dict:
        """Metadata of an output layer: its kind and the movie's file (for projects, export)."""
        meta = {OUTPUT_KEY: kind}
        movie = self.movie_layer
        src = None
        if movie is not None:
            src = movie.metadata.get("source_path") or getattr(movie.source, "path", None)
        if src:
            meta["source_path"] = str(src)
        return meta

    def _geometry(self) -> dict:
        """The movie layer's scale and translate (time, y, x), for every output layer: cells
        and tracks land on the movie in its physical units."""
        movie = self.movie_layer
        if movie is None:
            return {}
        return {"scale": tuple(movie.scale[-3:]), "translate": tuple(movie.translate[-3:])}

    def _prepare_layers(self, shape):
        """Empty output layers for a new run (existing ones are reused)."""
        T, Y, X = shape
        name = self._run_name = self.movie_layer.name
        zeros = _pipeline().label_buffer((T, Y, X))  # on disk for a long movie
        self._release_corrected_layers()
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            self.labels_layer.data = zeros
            self.labels_layer.metadata.pop(LINEAGE_KEY, None)
        else:
            self.labels_layer = self.viewer.add_labels(zeros, name=f"{name} cells", opacity=0.55,
                                                       metadata=self._output_metadata("labels"),
                                                       **self._geometry())
            self.labels_layer.events.colormap.connect(self._sync_track_colours)
        if self.tracks_layer is not None and self.tracks_layer in self.viewer.layers:
            self.viewer.layers.remove(self.tracks_layer)
        self.tracks_layer = None
        if self.pca_layer is not None and self.pca_layer in self.viewer.layers:
            self.pca_layer.data = np.zeros((T, Y, X, 3), np.uint8)
        else:
            self.pca_layer = None
        self._pca_done = set()
        if self.show_pca.value:
            self._ensure_pca_layer()
        self._next_preview_id = 1
        self.viewer.layers.selection.active = self.labels_layer

    def _ensure_pca_layer(self):
        if self.pca_layer is not None and self.pca_layer in self.viewer.layers:
            self.pca_layer.visible = True
            return self.pca_layer
        T, Y, X = (self.session.n_frames,) + tuple(self.session.movie.shape[1:]) \
            if self.session is not None else self.movie_layer.data.shape
        self.pca_layer = self.viewer.add_image(
            np.zeros((T, Y, X, 3), np.uint8), rgb=True, name=f"{self._run_name} embedding colours",
            metadata={OUTPUT_KEY: "embedding"},
            opacity=0.8, contrast_limits=(0, 255), **self._geometry())
        self._pca_done = set()
        # keep it below the labels so cell outlines stay visible
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            i = self.viewer.layers.index(self.pca_layer)
            j = self.viewer.layers.index(self.labels_layer)
            if i > j:
                self.viewer.layers.move(i, j)
        return self.pca_layer

    def _write_pair(self, t, la, lb):
        """Show a pair clustering on frames t-1 and t; ids shifted so frames stay distinct."""
        lab = self.labels_layer
        if lab is None or lab not in self.viewer.layers:
            return
        base = self._next_preview_id - 1
        n = int(max(la.max(initial=0), lb.max(initial=0)))
        for tt, frame in ((t - 1, la), (t, lb)):
            if self._tracked and tt not in self._backup:
                self._backup[tt] = np.array(lab.data[tt])
            out = frame.astype(np.uint32)
            out[out > 0] += base
            lab.data[tt] = out
        self._next_preview_id += n
        self._refresh_if_shown(lab, (t - 1, t))

    def _refresh_if_shown(self, layer, frames):
        """Redraw ``layer`` only when one of ``frames`` is on screen.

        Frames written off screen are read from the data when the slider gets there; a redraw
        re-colours the whole visible slice (tens of ms on the GUI thread), so skip needless ones.
        """
        dims = self.viewer.dims
        if dims.ndim < 3 or layer.ndim < 3 or dims.ndisplay == 3:
            layer.refresh()
            return
        # layers' axes line up with the viewer's last ones: time is axis ndim - layer.ndim
        if int(dims.current_step[dims.ndim - layer.ndim]) in frames:
            layer.refresh()

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

    def _show_next(self):
        """One step of :meth:`_show_result`; the next one after the event loop has run.

        Each step (labels, removing the old tracks, adding the new ones, selecting) costs up to
        ~100 ms on the GUI thread; run back to back they froze the viewer for half a second.
        The job counts as busy, and ``job_finished`` waits, until the last step is done.
        """
        gen = self._showing
        if gen is None or self._closed:
            return
        try:
            next(gen)
        except BaseException as e:
            self._showing = None
            if self._finish_pending:  # the widget must not stay busy, whatever happened
                self._finish_pending = False
                self._on_finished()
            if isinstance(e, StopIteration):
                return
            raise
        QTimer.singleShot(0, self._show_next)

    def _show_result(self, labels, lineage, tracks_layer, params):
        """Generator: show a tracking result, one light step per ``next`` (see _show_next)."""
        lab = self.labels_layer
        if lab is None or lab not in self.viewer.layers:
            self.labels_layer = lab = self.viewer.add_labels(
                labels, name=f"{self._run_name} cells", opacity=0.55,
                metadata=self._output_metadata("labels"), **self._geometry())
            lab.events.colormap.connect(self._sync_track_colours)
        elif isinstance(lab.data, np.ndarray) and lab.data.shape == labels.shape and \
                lab.data.dtype == labels.dtype and lab.data.flags.writeable:
            # the layer made for this run: a copy and one redraw cost far less than a new
            # data array (napari re-derives dims, slices and textures for that)
            np.copyto(lab.data, labels)
            lab.refresh()
        else:
            lab.data = labels
        lab.metadata[LINEAGE_KEY] = lineage
        lab.metadata["params"] = {n: getattr(params, n) for n in self.param_widgets}
        self._applied_params = params
        self._backup.clear()
        self._tracked = True
        self._stale = False
        yield
        if self.tracks_layer is not None and self.tracks_layer in self.viewer.layers:
            self.viewer.layers.remove(self.tracks_layer)
            yield
        self.tracks_layer = None
        if tracks_layer is not None:
            self.tracks_layer = self.viewer.add_layer(tracks_layer)
            if tracks_layer.colormaps_dict.get("track_id") is not lab.colormap:
                self._sync_track_colours()
            yield
        if lab in self.viewer.layers:
            self.viewer.layers.selection.active = lab
        n_div = int(len(set(lineage[lineage[:, 3] > 0, 3].tolist())))
        self.output_info.setText(f"{len(lineage)} tracks, {n_div} divisions.")
        self.params_info.setText("Changes show at once on the two frames under the time slider.")

    def _sync_track_colours(self, *_):
        # "shuffle colours" on the labels: keep each track line the colour of its cell
        if self.tracks_layer is not None and self.labels_layer is not None:
            self.tracks_layer.colormaps_dict = {"track_id": self.labels_layer.colormap}
            self.tracks_layer.color_by = "track_id"

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

    # ------------------------------------------------------------------------------------
    # Live clustering
    # ------------------------------------------------------------------------------------
    def _current_pair(self):
        t = int(self.viewer.dims.current_step[0]) if self.viewer.dims.ndim >= 3 else 0
        return max(t, 1)

    def relabel_current(self):
        """Re-cluster the frame pair under the time slider with the current parameters."""
        s = self.session
        if s is None or self.controller.phase in (Phase.RUNNING, Phase.TRACKING, Phase.TRAINING) or self._job == "apply":
            return  # a running job picks the new settings up for the frames still to come
        if self._release_corrected_layers():
            self.params_info.setText("The result is being corrected; press “Apply to all "
                                     "frames” to track again into a new layer.")
            self._update_state()
            return
        if self.labels_layer is None or self.labels_layer not in self.viewer.layers:
            return
        t = min(self._current_pair(), s.n_frames - 1)
        if s.frames_done <= t:
            self.params_info.setText(f"Frame {t} has not been through the network yet; the "
                                     "new settings will be used when it has.")
            return
        if self._live_worker is not None:
            self._live_again = True
            return
        params = self.params()
        if self._tracked and params == self._applied_params:
            self._restore_tracking()
            return
        worker = create_worker(self.controller.cluster_pair, t, params, _start_thread=False,
                               _connect={"errored": self._on_error})
        self._live_worker = worker
        worker.returned.connect(self._on_live_return)
        worker.finished.connect(self._on_live_finished)
        worker.start()

    def _on_live_return(self, res):
        if self._closed:
            return
        t, la, lb = res
        if self.controller.phase in (Phase.RUNNING, Phase.TRACKING) or self._job == "apply":
            return  # the run's own preview is writing the labels, or a tracking is coming
        self._write_pair(t, la, lb)
        if self._tracked or self._stale:
            self._stale = True
            self.params_info.setText(
                f"<b>Frames {t - 1} and {t} show the new settings.</b> Move the time slider to "
                "check other frames; press “Apply to all frames” to track the whole movie with "
                "them.")
        self._update_state()

    def _restore_tracking(self):
        """Back to the settings of the full tracking: put its frames back, nothing is stale."""
        lab = self.labels_layer
        for tt, frame in self._backup.items():
            lab.data[tt] = frame
        self._backup.clear()
        lab.refresh()
        self._stale = False
        self.params_info.setText("Showing the tracking made with these settings.")
        self._update_state()

    def _on_live_finished(self):
        if self._closed:
            return
        self._live_worker = None
        self._update_state()
        if self._live_again and self._worker is None:
            self._live_again = False
            self.relabel_current()

    # ------------------------------------------------------------------------------------
    # Apply to all frames
    # ------------------------------------------------------------------------------------
    def apply_to_all(self):
        """Re-cluster every frame pair with the current parameters and re-link the tracks."""
        s = self.session
        if s is None or self._worker is not None or s.frames_done < s.n_frames:
            return
        self._debounce.stop()  # the tracking uses the current settings anyway
        self._live_again = False
        self._release_corrected_layers()
        self.controller.phase = Phase.TRACKING
        key = self.controller.session_key
        self._start("apply", self.controller.track_job, self._tracks_layer_for,
                    total=s.n_frames - 1,
                    desc="Finding and linking cells", on_yield=self._on_run_yield,
                    on_return=lambda res: self._on_run_return(res, key))

    # ------------------------------------------------------------------------------------
    # Embedding colours
    # ------------------------------------------------------------------------------------
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

    # ------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------
    def _default_export_dir(self) -> str:
        layer = self.movie_layer
        src = (layer.metadata.get("source_path") if layer is not None else None) or ""
        if src:
            p = Path(src)
            return str(p.parent / f"{p.stem if p.is_file() else p.name}_RES")
        return str(Path.home() / f"{layer.name if layer else 'movie'}_RES")

    def _export_dialog(self):
        path, _ = QFileDialog.getSaveFileName(
            self, "Export CTC result folder (created or replaced)", self._default_export_dir())
        if path:
            self.export(path)

    def export(self, path):
        """Write the tracked labels layer (and its lineage) as a CTC result folder ``path``."""
        from .writer import write_result

        lab = self.labels_layer
        if lab is None or lab not in self.viewer.layers or not self._tracked or self._worker:
            show_warning("Nothing to export yet: run the tracking first.")
            return None
        labels = np.asarray(lab.data)
        lineage = lab.metadata.get(LINEAGE_KEY)
        self.controller.phase = Phase.EXPORTING

        def job():
            try:
                return write_result(path, labels, lineage)
            except Exception as e:
                raise step_error(f"Exporting to {path} failed", e) from e

        def done(paths):
            self.output_info.setText(f"Saved {labels.shape[0]} masks and res_track.txt to "
                                     f"{paths[0]}")

        return self._start("export", job, total=0, desc="Exporting", on_return=done)

    def _fine_tune_dialog(self):
        # Beside the user's own model folder; never inside the package's models.
        base = (self._model_dir().parent if self.model_source.value == MODEL_FOLDER
                else Path(self._default_export_dir()).parent)
        path, _ = QFileDialog.getSaveFileName(
            self, "Save the fine-tuned model as a folder (created)", str(base / "my_model"))
        if path:
            self.fine_tune(path)

    def fine_tune(self, path, steps: int | None = None):
        """Fine-tune the current model on the movie and its cells layer (corrections included)
        and save it to the model folder ``path``; when done, switch the widget to it.

        The frames are resized as for the run (*Resize frames by*), so the new model expects
        the same setting. A built-in synthetic movie joins the training data so the model
        keeps what it knew. Cancel stops after the current step and keeps the model so far.
        """
        from napari_cosine_tracker.core.devices import resolve_device
        from napari_cosine_tracker.core.model import read_model_config
        from napari_cosine_tracker.core.train import TrainConfig, iter_train, sequence_from_arrays

        lab, (movie, _) = self.labels_layer, self._check_movie()
        if (lab is None or lab not in self.viewer.layers or not self._tracked or self._stale
                or self._worker or movie is None):
            show_warning("Nothing to learn from yet: run the tracking (and correct it) first.")
            return None
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not (path / "config.json").exists():
            show_warning(f"{path} is a folder with other files in it; choose a new folder.")
            return None
        steps = int(steps or self.finetune_steps.value)
        model_dir = self._model_dir()
        labels = np.asarray(lab.data)
        scale = float(self.scale.value)
        device = str(resolve_device(self._device()))
        self.controller.phase = Phase.TRAINING
        losses = []

        def job():
            try:
                config = read_model_config(model_dir)
                pixel_scale = float(config.get("preprocessing", {}).get("pixel_scale", 1.0)) * scale
                data = [sequence_from_arrays(movie, labels, pixel_scale, name=lab.name,
                                             notes={"labels": "napari layer"}), "synthetic:1"]
                cfg = TrainConfig(init=str(model_dir), steps=steps,
                                  clip_length=min(6, len(labels)), crop=128, batch_size=1, lr=3e-4,
                                  lr_final=3e-5, holdout=0.0, device=device,
                                  checkpoint_every=max(50, steps // 4))
                training = iter_train(data, path, cfg=cfg, progress=False,
                                      command=f"napari widget: fine-tune on layer {lab.name!r}")
                try:
                    for _, loss in training:
                        losses.append(loss)
                        yield 1
                        if self.controller.stop.is_set():
                            break
                finally:
                    training.close()  # saves the model as it is
            except Exception as e:
                raise step_error("Fine-tuning failed", e) from e

        def done(_):
            if not losses or not (path / "weights.safetensors").exists():
                return
            n = len(losses)
            first, last = float(np.mean(losses[:10])), float(np.mean(losses[-10:]))
            self.finetune_info.setText(f"Trained {n} steps (loss {first:.3f} → {last:.3f}); saved "
                                       f"to {path}. Now using it: Run to track with it.")
            settings = {k: w.value for k, w in self.param_widgets.items()}
            self.model_source.value = MODEL_FOLDER
            self.model_folder.value = str(path)
            for k, v in settings.items():  # the settings the cells were made with carry over
                self.param_widgets[k].value = v

        return self._start("finetune", job, total=steps, desc="Fine-tuning",
                           on_yield=self._step, on_return=done)

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
