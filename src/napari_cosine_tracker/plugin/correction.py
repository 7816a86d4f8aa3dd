"""The docked "Track correction" widget: fix a tracking result by hand, safely.

It binds a tracked Labels layer (the tracker widget's output, or a CTC result folder opened
with the plugin's reader) to a :class:`~napari_cosine_tracker.core.edit.TrackEditor`, which
keeps the labels and the lineage consistent and records every edit for undo/redo. The layer
gets its own copy of the labels; after every edit, undo or redo only the changed frames are
copied back from the editor, and the Tracks layer, the lineage view and the review list follow.

* **Select**: click a cell (camera mode) to select its track; Shift+click a second cell, in
  any frame, for actions on two tracks. The selection is outlined on the canvas and in the
  lineage view.
* **Edit**: buttons and keyboard shortcuts (listed on the buttons) for every editor action;
  strokes with napari's own brush, fill bucket, eraser or polygon become one undoable edit.
* **Review**: events most likely to be wrong, most doubtful first; a click goes there.
* **Autosave**: every edit is written (debounced, in a background thread) to a project folder
  beside the movie (``movie.tracks``); binding a layer of a movie with a saved project offers
  to restore it.
* **Export**: CTC result folder, GEFF, CSV (atomic writes, :mod:`..core.export`).
"""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from napari.layers import Image, Labels, Shapes, Tracks
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cosine_tracker.core import user_actions
from napari_cosine_tracker.core.edit import (
    PROJECT_KEY,
    TrackEditor,
    autosave_project_path,
    default_project_path,
)

from .docking import join_as_tab
from .layers import (
    CORRECTING_KEY,
    LINEAGE_KEY,
    division_graph,
    name_time_axis,
    track_features,
    tracks_layer_kwargs,
)
from .lineage_view import LineageView
from .napari_private import reset_undo_history

if TYPE_CHECKING:
    import napari

__all__ = ["CorrectionWidget", "SHORTCUTS"]

#: metadata key of the tracker widget's output layers (see widget.py)
OUTPUT_KEY = "cosine_tracker_output"
SELECTION_LAYER = "selected track"
LINE_LAYER = "cut line"

#: action -> (button text, napari key, tooltip). Keys are free in napari's Labels keymap.
SHORTCUTS = {
    "delete_cell": ("Delete cell", "Delete", "Remove the selected cell from this frame."),
    "delete_track": ("Delete track", "Shift-Delete",
                     "Remove the selected track in every frame (its daughters keep going)."),
    "merge": ("Merge with 2nd", "G",
              "Join the second selected cell into the first (this frame): one cell."),
    "split": ("Split cell", "K",
              "Cut the selected cell in two: along the line drawn with “Draw cut line”, "
              "or, without a line, where it narrows."),
    "swap": ("Swap / reassign from here", "W",
             "From this frame on, the first and second selected tracks exchange identities "
             "(or the first continues as the second when that one has ended)."),
    "link": ("Link tracks", "J",
             "Join the two selected tracks: the later one continues the earlier one."),
    "cut": ("Cut track here", "U",
            "From this frame on the selected track becomes a new track (no parent)."),
    "mark_division": ("Mark division", "Y",
                      "The selected track that ends earlier becomes the mother of the other."),
    "unmark_division": ("Unmark division", "Shift-Y",
                        "The selected track no longer has a mother."),
    "undo": ("Undo", "Control-Z", "Undo the last correction (any number of times)."),
    "redo": ("Redo", "Control-Shift-Z", "Redo the last undone correction."),
}


def _key_text(key: str) -> str:
    return key.replace("Control", "Ctrl").replace("Delete", "Del").replace("-", "+")


def _qcolor(rgba) -> QColor:
    r, g, b = (np.clip(np.asarray(rgba, float)[:3], 0, 1) * 255).astype(int).tolist()
    return QColor(r, g, b)


class CorrectionWidget(QWidget):
    """Hand correction of a tracked Labels layer with undo/redo, review list and autosave.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    ask_restore : callable, optional
        ``ask_restore(project_folder, text) -> bool`` decides whether a saved project is
        restored when a layer is bound; defaults to a question dialog.
    autosave_delay_ms : int
        Quiet time after the last edit before the project is written.
    dock_lineage : bool
        Dock the lineage view under the canvas (else it is only :attr:`lineage_view`).
    """

    #: emitted from the autosave thread: (folder or None, error message or "")
    _saved = Signal(object, str)


    _cosine_tracker_panel = True  # see docking.PANEL_MARKER

    def showEvent(self, event):  # noqa: N802 - Qt name
        join_as_tab(self)  # beside the plugin's other panels, as a tab
        super().showEvent(event)

    def __init__(self, napari_viewer: napari.viewer.Viewer, *,
                 ask_restore: Callable[[Path, str], bool] | None = None,
                 autosave_delay_ms: int = 500, dock_lineage: bool = True):
        super().__init__()
        self.viewer = napari_viewer
        self.editor: TrackEditor | None = None
        self.layer: Labels | None = None
        self.tracks_layer: Tracks | None = None
        self.selection_layer: Labels | None = None
        self.project_path: Path | None = None
        self._movie_file: Path | None = None  # the movie's file, if it has one
        self.primary: int | None = None
        self.secondary: int | None = None
        self._ask_restore = ask_restore or self._ask_restore_dialog
        self._lock = threading.RLock()  # editor state: GUI edits vs the autosave thread
        self._save_thread: threading.Thread | None = None
        self._dirty = False
        self._setting_data = False
        self._bound_keys: list[tuple[object, str]] = []
        self._points: dict[int, np.ndarray] = {}  # per frame Tracks data, kept between edits
        self._tree_lineage: np.ndarray | None = None

        self._autosave_timer = QTimer(self)
        self._autosave_timer.setSingleShot(True)
        self._autosave_timer.setInterval(int(autosave_delay_ms))
        self._autosave_timer.timeout.connect(self.autosave)
        self._review_timer = QTimer(self)
        self._review_timer.setSingleShot(True)
        self._review_timer.setInterval(400)
        self._review_timer.timeout.connect(self.refresh_review)
        self._saved.connect(self._on_saved)
        from qtpy.QtWidgets import QApplication

        if QApplication.instance() is not None:  # quitting napari: write the last edit
            QApplication.instance().aboutToQuit.connect(self.flush_autosave)

        self.lineage_view = LineageView()
        self.lineage_view.node_clicked.connect(self._on_tree_clicked)
        self._build()
        self._lineage_dock = None
        if dock_lineage:
            try:
                self._lineage_dock = self.viewer.window.add_dock_widget(
                    self.lineage_view, name="Lineage", area="bottom")
            except Exception:  # headless viewers without a window
                self._lineage_dock = None
        self.viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self.viewer.dims.events.current_step.connect(self._on_time_changed)
        self._refresh_layers(auto_bind=True)

    # ------------------------------------------------------------------------------------
    # Layout
    # ------------------------------------------------------------------------------------
    def _build(self):
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)

        row = QHBoxLayout()
        row.addWidget(QLabel("Tracked cells:"))
        self.layer_combo = QComboBox()
        self.layer_combo.setToolTip("The tracked Labels layer to correct (a tracking result or "
                                    "a CTC result folder opened in napari).")
        self.layer_combo.activated.connect(self._on_combo)
        row.addWidget(self.layer_combo, 1)
        lay.addLayout(row)

        self.selection_info = QLabel()
        self.selection_info.setWordWrap(True)
        lay.addWidget(self.selection_info)
        hint = QLabel("<small>Click a cell to select its track (camera mode, key 6 or Z). "
                      "Shift+click a second cell, in any frame, for merge, swap, link and "
                      "division. Painting with the brush, fill or eraser is recorded too.</small>")
        hint.setWordWrap(True)
        lay.addWidget(hint)

        self.buttons: dict[str, QPushButton] = {}

        def button(name):
            text, key, tip = SHORTCUTS[name]
            b = QPushButton(f"{text}  [{_key_text(key)}]")
            b.setToolTip(f"{tip}\nShortcut: {_key_text(key)}")
            b.clicked.connect(lambda *_: self.perform(name))
            self.buttons[name] = b
            return b

        cell_box = QGroupBox("Cell in this frame")
        g = QGridLayout(cell_box)
        g.addWidget(button("delete_cell"), 0, 0)
        g.addWidget(button("merge"), 0, 1)
        g.addWidget(button("split"), 1, 0)
        self.line_button = QPushButton("Draw cut line")
        self.line_button.setToolTip("Draw a line across the cell on the canvas, then press "
                                    "“Split cell”. Without a line the cell is split where it "
                                    "narrows.")
        self.line_button.clicked.connect(self.start_cut_line)
        g.addWidget(self.line_button, 1, 1)
        lay.addWidget(cell_box)

        track_box = QGroupBox("Track")
        g = QGridLayout(track_box)
        g.addWidget(button("delete_track"), 0, 0)
        g.addWidget(button("cut"), 0, 1)
        g.addWidget(button("link"), 1, 0)
        g.addWidget(button("swap"), 1, 1)
        g.addWidget(button("mark_division"), 2, 0)
        g.addWidget(button("unmark_division"), 2, 1)
        lay.addWidget(track_box)

        row = QHBoxLayout()
        row.addWidget(button("undo"))
        row.addWidget(button("redo"))
        lay.addLayout(row)
        self.history_info = QLabel()
        self.history_info.setWordWrap(True)
        lay.addWidget(self.history_info)

        review_box = QGroupBox("Review: most doubtful first")
        v = QVBoxLayout(review_box)
        self.review_list = QListWidget()
        self.review_list.setToolTip("Events most likely to be wrong. Click one to go there.")
        self.review_list.itemClicked.connect(self._on_review_clicked)
        self.review_list.currentItemChanged.connect(
            lambda cur, _prev: cur is not None and self._on_review_clicked(cur))
        self.review_list.setMinimumHeight(120)
        v.addWidget(self.review_list)
        lay.addWidget(review_box, 1)

        out_box = QGroupBox("Save and export")
        v = QVBoxLayout(out_box)
        self.save_info = QLabel()
        self.save_info.setWordWrap(True)
        v.addWidget(self.save_info)
        row = QHBoxLayout()
        self.export_buttons = {}
        for fmt, text in (("ctc", "CTC folder…"), ("geff", "GEFF…"), ("csv", "CSV…")):
            b = QPushButton(text)
            b.clicked.connect(lambda *_, f=fmt: self._export_dialog(f))
            self.export_buttons[fmt] = b
            row.addWidget(b)
        v.addLayout(row)
        self.save_project_button = QPushButton("Save project as…")
        self.save_project_button.setToolTip(
            "Save the cells, their lineage, the whole edit history and the movie's location "
            "as one folder (name.tracks); File → Open (or `napari-cosine-tracker export`) opens "
            "it again, and undo still works.")
        self.save_project_button.clicked.connect(self._save_project_dialog)
        v.addWidget(self.save_project_button)
        lay.addWidget(out_box)
        self._update_state()

    # ------------------------------------------------------------------------------------
    # Layers
    # ------------------------------------------------------------------------------------
    @staticmethod
    def _is_tracked(layer) -> bool:
        if not isinstance(layer, Labels) or layer.name == SELECTION_LAYER:
            return False
        if np.ndim(layer.data) != 3 or getattr(layer, "multiscale", False):
            return False
        # the tracker's output layer while it is still being filled has no lineage yet
        return LINEAGE_KEY in layer.metadata or layer.metadata.get(OUTPUT_KEY) != "labels"

    def _candidates(self) -> list[Labels]:
        layers = [l for l in self.viewer.layers if self._is_tracked(l)]
        return sorted(layers, key=lambda l: LINEAGE_KEY not in l.metadata)

    def _refresh_layers(self, *_, auto_bind: bool = False):
        layers = self._candidates()
        self.layer_combo.blockSignals(True)
        self.layer_combo.clear()
        for l in layers:
            self.layer_combo.addItem(l.name)
        if self.layer is not None and self.layer in layers:
            self.layer_combo.setCurrentIndex(layers.index(self.layer))
        self.layer_combo.blockSignals(False)
        if auto_bind and self.layer is None and layers and LINEAGE_KEY in layers[0].metadata:
            # the obvious choice when the widget opens or a result appears: bind it at once
            QTimer.singleShot(0, lambda: self.layer is None and layers[0] in self.viewer.layers
                              and self.bind(layers[0]))

    def _on_layer_inserted(self, event):
        self._refresh_layers(auto_bind=self._is_tracked(event.value))

    def reset_choices(self, *_):  # napari calls this when layers change
        self._refresh_layers()

    def _on_combo(self, index: int):
        layers = self._candidates()
        if 0 <= index < len(layers) and layers[index] is not self.layer:
            self.bind(layers[index])

    def _on_layer_removed(self, event):
        layer = event.value
        if layer is self.layer:
            self.unbind()
        if layer is self.tracks_layer:
            self.tracks_layer = None
        if layer is self.selection_layer:
            self.selection_layer = None
        self._refresh_layers()

    def _movie_path(self, layer) -> Path | None:
        """The file/folder the result belongs to: the movie, else the result folder."""
        if layer.metadata.get("source_path"):
            return Path(layer.metadata["source_path"])
        name = layer.name
        if name.endswith(" cells"):  # the tracker widget names its output "<movie> cells"
            movie = name[: -len(" cells")]
            for l in self.viewer.layers:
                if isinstance(l, Image) and l.name == movie:
                    p = l.metadata.get("source_path") or getattr(l.source, "path", None)
                    if p:
                        return Path(p)
        p = getattr(layer.source, "path", None)
        return Path(p) if p else None

    def _movie_data(self, layer, labels):
        """The pixels that identify a file-less result: its movie layer's ("<movie> cells"
        comes from the movie "<movie>"), else the labels as they are when first bound."""
        if layer.name.endswith(" cells"):
            movie = layer.name[: -len(" cells")]
            for l in self.viewer.layers:
                if isinstance(l, Image) and l.name == movie and l.ndim == 3:
                    return l.data
        return labels

    def _find_tracks_layer(self, layer) -> Tracks | None:
        lin = layer.metadata.get(LINEAGE_KEY)
        tracks = [l for l in self.viewer.layers if isinstance(l, Tracks)]
        for t in tracks:
            if lin is not None and t.metadata.get(LINEAGE_KEY) is lin:
                return t
        stem = layer.name.rsplit(" ", 1)[0]
        for t in tracks:
            if t.name == f"{stem} tracks":
                return t
        return None

    # ------------------------------------------------------------------------------------
    # Binding
    # ------------------------------------------------------------------------------------
    def bind(self, layer: Labels, restore: bool | None = None) -> TrackEditor:
        """Correct ``layer`` from now on; ``restore``: use a saved project (None: ask)."""
        if layer is self.layer and self.editor is not None:
            return self.editor
        self.unbind()
        data = np.asarray(layer.data)
        if data.ndim != 3:
            raise ValueError(f"layer {layer.name!r} must be (T, Y, X) tracked labels, got shape "
                             f"{data.shape}")
        movie = self._movie_path(layer)
        # corrections are autosaved beside the movie's file, or, for a movie without one, in
        # a per-user folder under a fingerprint of the movie's pixels (offered back when the
        # same data is opened again); a project opened by the user is continued as it is
        opened = layer.metadata.get(PROJECT_KEY)
        project = (Path(opened) if opened else default_project_path(movie) if movie is not None
                   else autosave_project_path(self._movie_data(layer, data)))
        if opened:
            restore = True  # opened on purpose: its history, no question
        editor = None
        if project is not None and (project / "state.npz").is_file():
            editor = self._maybe_restore(project, data.shape, restore)
        if editor is None:
            lineage = layer.metadata.get(LINEAGE_KEY)
            editor = TrackEditor(data, lineage, repair=True,
                                 meta={"movie": str(movie) if movie else None,
                                       "layer": layer.name})
        self.editor, self.layer, self.project_path = editor, layer, project
        self._movie_file = movie
        self._set_layer_data(editor.labels.copy())
        reset_undo_history(layer)  # napari's own undo would bypass the editor
        layer.metadata[LINEAGE_KEY] = editor.lineage
        layer.metadata[CORRECTING_KEY] = True
        editor.connect(self._on_edit)
        layer.events.paint.connect(self._on_paint)
        layer.events.data.connect(self._on_data_replaced)
        layer.events.colormap.connect(self._on_colormap)
        layer.mouse_drag_callbacks.append(self._on_mouse)
        self._bind_keys(layer)
        self.tracks_layer = self._find_tracks_layer(layer)
        self._ensure_selection_layer()
        self.viewer.layers.selection.active = layer  # its shortcuts and paint tools apply
        name_time_axis(self.viewer)
        self.primary = self.secondary = None
        self._refresh_layers()
        self._update_tracks()
        self._tree_lineage = None
        self._refresh_tree()
        self.refresh_review()
        self._update_selection()
        self._dirty = project is not None and editor.project_path is None
        if self._dirty:  # write the starting labels now, before the first edit
            self.autosave()
        self._update_state()
        return editor

    def _maybe_restore(self, project: Path, shape, restore: bool | None) -> TrackEditor | None:
        try:
            saved = TrackEditor.open(project)
        except (OSError, ValueError) as e:
            show_warning(f"The saved corrections in {project} cannot be read ({e}); starting "
                         "from the layer. The old project is kept as a backup.")
            self._backup_project(project)
            return None
        if saved.shape != tuple(shape):
            show_warning(f"The saved corrections in {project} are for a movie of shape "
                         f"{saved.shape}, not {tuple(shape)}; starting from the layer. The old "
                         "project is kept as a backup.")
            self._backup_project(project)
            return None
        n = len(saved.history)
        when = _dt.datetime.fromtimestamp((project / "state.npz").stat().st_mtime)
        text = (f"Corrections saved on {when:%Y-%m-%d %H:%M} for this movie were found "
                f"({n} edit{'s' if n != 1 else ''}, in {project}).\n\nRestore them?\n\n"
                "Yes: continue where you stopped (undo still works).\n"
                "No: start from the layer as it is; the saved corrections are kept in a "
                "backup folder beside it.")
        ok = restore if restore is not None else self._ask_restore(project, text)
        if ok:
            return saved
        self._backup_project(project)
        return None

    def _ask_restore_dialog(self, project: Path, text: str) -> bool:
        yes, no = QMessageBox.StandardButton.Yes, QMessageBox.StandardButton.No
        answer = QMessageBox.question(self, "Restore saved corrections?", text, yes | no, yes)
        return answer == yes

    @staticmethod
    def _backup_project(project: Path) -> Path:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        dest = project.with_name(f"{project.name}.backup-{stamp}")
        k = 1
        while dest.exists():
            dest = project.with_name(f"{project.name}.backup-{stamp}-{k}")
            k += 1
        project.rename(dest)
        show_info(f"Earlier corrections moved to {dest}")
        return dest

    def unbind(self):
        """Stop correcting the bound layer (the project is saved first)."""
        if self.editor is None:
            return
        self.flush_autosave()
        self.editor.disconnect(self._on_edit)
        layer = self.layer
        if layer is not None:
            layer.metadata.pop(CORRECTING_KEY, None)
            for ev, fn in ((layer.events.paint, self._on_paint),
                           (layer.events.data, self._on_data_replaced),
                           (layer.events.colormap, self._on_colormap)):
                try:
                    ev.disconnect(fn)
                except (TypeError, RuntimeError, ValueError):
                    pass
            if self._on_mouse in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._on_mouse)
        self._unbind_keys()
        sel = self.selection_layer
        self.editor = self.layer = None
        self.primary = self.secondary = None
        if sel is not None and sel in self.viewer.layers:
            self.viewer.layers.remove(sel)
        self.selection_layer = None
        self._points = {}
        self._tree_lineage = None
        self.lineage_view.set_lineage(np.zeros((0, 4), np.int64), 0)
        self.review_list.clear()
        self._update_selection()
        self._update_state()

    def _set_layer_data(self, data):
        self._setting_data = True
        try:
            self.layer.data = data
        finally:
            self._setting_data = False

    def _on_data_replaced(self, event=None):
        if self._setting_data or self.layer is None:
            return
        # Someone (e.g. a new tracking run) replaced the labels: start over on the new data
        # once the caller has also updated the lineage in the metadata.
        layer = self.layer

        def rebind():
            if self.layer is not layer:
                return
            self.unbind()
            if layer not in self.viewer.layers:
                return
            if self._is_tracked(layer):
                show_info(f"“{layer.name}” was replaced; corrections now apply to the new "
                          "labels.")
                self.bind(layer)
            else:  # a new tracking run started: bind its result when it is there
                self._wait_for(layer)

        QTimer.singleShot(0, rebind)  # the caller sets the new lineage right after the data

    def _wait_for(self, layer):
        self.selection_info.setText(f"Waiting for the tracking of “{layer.name}” to finish.")

        def check(*_):
            def later():
                if layer in self.viewer.layers and self._is_tracked(layer) and \
                        self.editor is None:
                    layer.events.data.disconnect(check)
                    self.bind(layer)
            QTimer.singleShot(0, later)

        layer.events.data.connect(check)

    # ------------------------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------------------------
    def _bind_keys(self, layer):
        from app_model.types import KeyCode, KeyMod

        for name, (_, key, _) in SHORTCUTS.items():
            fn = self._key_handler(name)
            if key.startswith("Control-"):  # Cmd on macOS, like napari's own undo
                key = KeyMod.CtrlCmd | (KeyMod.Shift if "Shift" in key else 0) | \
                    getattr(KeyCode, f"Key{key[-1]}")
            for target in (layer, self.viewer):
                try:
                    target.bind_key(key, fn, overwrite=True)
                except Exception:  # a key napari reserves: the button still works
                    continue
                self._bound_keys.append((target, key))

    def _key_handler(self, name):
        def handler(*_):
            self.perform(name)
        handler.__name__ = f"track_correction_{name}"
        handler.__doc__ = SHORTCUTS[name][2]
        return handler

    def _unbind_keys(self):
        for target, key in self._bound_keys:
            try:
                target.bind_key(key, None)
            except Exception:
                pass
        self._bound_keys.clear()

    # ------------------------------------------------------------------------------------
    # Time and position
    # ------------------------------------------------------------------------------------
    def current_frame(self) -> int:
        if self.layer is None:
            return int(self.viewer.dims.current_step[0])
        world = list(self.viewer.dims.point)[-3:]
        t = int(np.round(self.layer.world_to_data(world)[0]))
        return int(np.clip(t, 0, self.layer.data.shape[0] - 1))

    def goto(self, t: int, y: float | None = None, x: float | None = None) -> None:
        """Show frame ``t`` (and centre the camera on ``(y, x)`` when given)."""
        if self.layer is None:
            return
        y0 = 0.0 if y is None or not np.isfinite(y) else y
        x0 = 0.0 if x is None or not np.isfinite(x) else x
        world = self.layer.data_to_world([t, y0, x0])
        axis = self.viewer.dims.ndim - 3
        self.viewer.dims.set_point(axis, world[0])
        if y is not None and x is not None and np.isfinite(y) and np.isfinite(x):
            camera = getattr(self.viewer, "scene", self.viewer).camera  # napari >= 0.9 keeps it in scene
            camera.center = (float(world[1]), float(world[2]))

    def _on_time_changed(self, *_):
        if self.editor is None:
            return
        self.lineage_view.set_time(self.current_frame())
        self._update_selection()

    # ------------------------------------------------------------------------------------
    # Selection
    # ------------------------------------------------------------------------------------
    def _on_mouse(self, layer, event):
        if layer.mode not in ("pan_zoom", "pick") or self.editor is None:
            return
        start = np.asarray(event.position, float)
        shift = "Shift" in event.modifiers
        yield
        moved = False
        while event.type == "mouse_move":
            if np.abs(np.asarray(event.position, float) - start).max() > 2:
                moved = True
            yield
        if moved:  # a camera drag, not a click
            return
        self.select_at(layer.world_to_data(list(start)[-3:]), second=shift)

    def select_at(self, data_coords, second: bool = False) -> int:
        """Select the track under ``(t, y, x)`` (data coordinates); 0: background."""
        t, y, x = (int(np.round(v)) for v in list(data_coords)[-3:])
        T, H, W = self.editor.shape
        i = 0
        if 0 <= t < T and 0 <= y < H and 0 <= x < W:
            i = self.editor.track_at(t, y, x)
        self.select(i or None, second=second)
        return i

    def select(self, track_id: int | None, second: bool = False) -> None:
        """Make ``track_id`` the first (or, with ``second``, the second) selected track."""
        if second:
            self.secondary = track_id if track_id != self.primary else None
        else:
            self.primary = track_id
            if track_id is None or track_id == self.secondary:
                self.secondary = None
        self._update_selection()

    def _update_selection(self):
        ed = self.editor
        if ed is None:
            self.selection_info.setText("No tracked layer: run the tracker or open a CTC result.")
            return
        rows = {int(r[0]): r for r in ed.lineage}
        if self.primary not in rows:
            self.primary = None
        if self.secondary not in rows:
            self.secondary = None

        def describe(i, colour):
            f, l, p = rows[i][1:].tolist()
            parent = f", mother {p}" if p else ""
            kids = [int(r[0]) for r in rows.values() if r[3] == i]
            daughters = f", daughters {', '.join(map(str, kids))}" if kids else ""
            return (f"<b style='color:{colour}'>track {i}</b> (frames {f}–{l}{parent}"
                    f"{daughters})")

        if self.primary is None:
            text = "No cell selected: click one."
        else:
            text = "Selected: " + describe(self.primary, "white")
            if self.secondary is not None:
                text += "<br>Second: " + describe(self.secondary, "#ffdc00")
        self.selection_info.setText(text)
        if self.layer is not None and self.primary is not None:
            self.layer.selected_label = self.primary  # the brush paints the selected track
        self.lineage_view.set_selection(self.primary, self.secondary)
        self._update_selection_layer()
        self._update_state()

    def _ensure_selection_layer(self):
        sel = self.selection_layer
        if sel is not None and sel in self.viewer.layers:
            return sel
        from napari.utils.colormaps import DirectLabelColormap

        H, W = self.editor.shape[1:]
        cmap = DirectLabelColormap(color_dict={None: "transparent", 0: "transparent",
                                               1: "white", 2: "#ffdc00"})
        active = self.viewer.layers.selection.active
        self.selection_layer = sel = self.viewer.add_labels(
            np.zeros((H, W), np.uint8), name=SELECTION_LAYER, colormap=cmap, opacity=1.0,
            scale=self.layer.scale[-2:], translate=self.layer.translate[-2:],
            blending="translucent_no_depth")
        sel.contour = 2
        sel.editable = False
        self.viewer.layers.selection.active = active if active is not None else self.layer
        return sel

    def _update_selection_layer(self):
        sel = self.selection_layer
        if sel is None or sel not in self.viewer.layers or self.editor is None:
            return
        t = self.current_frame()
        frame = self.editor.labels[t]
        out = np.zeros(frame.shape, np.uint8)
        if self.secondary is not None:
            out[frame == self.secondary] = 2
        if self.primary is not None:
            out[frame == self.primary] = 1
        if out.shape != sel.data.shape:
            sel.data = out
        elif not np.array_equal(out, sel.data):
            sel.data[:] = out  # in place: far cheaper than a new layer data
            sel.refresh()

    def _on_tree_clicked(self, track_id: int, t: int, shift: bool):
        if self.editor is None:
            return
        cy, cx = self.editor.centroids(t).get(track_id, (None, None))
        self.goto(t, cy, cx)
        self.select(track_id, second=shift)

    # ------------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------------
    def perform(self, name: str) -> bool:
        """Run one action on the current selection (as its button/shortcut); False if refused."""
        ed = self.editor
        if ed is None:
            show_warning("Choose a tracked cells layer first.")
            return False
        line = self._cut_line() if name == "split" else None
        try:
            with self._lock:
                sel = user_actions.perform(ed, name, self.current_frame(), self.primary,
                                           self.secondary, line=line)
        except user_actions.ActionRefused as e:
            self._refuse(str(e))
            return False
        if name == "split":
            self._clear_cut_line()
        self.primary, self.secondary = sel.primary, sel.secondary
        self._update_selection()
        return True

    def _refuse(self, msg: str):
        self.history_info.setText(f"<span style='color:#ff9a3c'>{msg}</span>")
        show_warning(msg)

    def _line_layer(self) -> Shapes | None:
        for l in self.viewer.layers:
            if isinstance(l, Shapes) and l.name == LINE_LAYER:
                return l
        return None

    def start_cut_line(self):
        """Add (or select) the "cut line" Shapes layer in path mode."""
        lines = self._line_layer()
        if lines is None:
            kw = {}
            if self.layer is not None:
                kw = dict(scale=self.layer.scale[-2:], translate=self.layer.translate[-2:])
            lines = self.viewer.add_shapes(name=LINE_LAYER, ndim=2, edge_color="#ff4040",
                                           edge_width=1.5, **kw)
        self.viewer.layers.selection.active = lines
        lines.mode = "add_path"
        self.history_info.setText("Draw the cut across the cell (click points, double-click "
                                  "to end), then press Split cell [K].")

    def _cut_line(self):
        lines = self._line_layer()
        if lines is None or not len(lines.data):
            return None
        pts = np.asarray(lines.data[-1], float)[:, -2:]
        world = np.asarray([lines.data_to_world(p) for p in pts])[:, -2:]
        return [self.layer.world_to_data([0, *w])[-2:] for w in world]

    def _clear_cut_line(self):
        lines = self._line_layer()
        if lines is not None:
            lines.data = []
            if self.layer is not None:
                self.viewer.layers.selection.active = self.layer

    # ------------------------------------------------------------------------------------
    # Painting with napari's tools
    # ------------------------------------------------------------------------------------
    def _on_paint(self, event):
        """A finished brush/fill/eraser/polygon stroke -> one undoable editor edit."""
        if self.editor is None:
            return
        per_frame: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for atom in event.value:
            for t, ys, xs, vals in _atom_pixels(atom):
                per_frame.setdefault(t, []).append((ys, xs, vals))
        reset_undo_history(self.layer)
        if not per_frame:
            return
        H, W = self.editor.shape[1:]
        edits = []
        for t, parts in sorted(per_frame.items()):
            ys = np.concatenate([p[0] for p in parts])
            xs = np.concatenate([p[1] for p in parts])
            vals = np.concatenate([p[2] for p in parts])
            lin = ys * W + xs
            # a later atom of the stroke wins where it repaints a pixel
            _, last = np.unique(lin[::-1], return_index=True)
            keep = len(lin) - 1 - last
            edits.append((t, ys[keep], xs[keep], vals[keep]))
        value = int(np.bincount(np.concatenate([e[3] for e in edits]).astype(np.int64)).argmax())
        what = "Erase" if value == 0 else f"Paint track {value}"
        label = f"{what} in frame {edits[0][0]}" if len(edits) == 1 else \
            f"{what} in frames {edits[0][0]}–{edits[-1][0]}"
        try:
            with self._lock:
                if len(edits) == 1:
                    self.editor.edit_pixels(*edits[0], label=label)
                else:
                    with self.editor.group(label):  # one "group" event redraws at the end
                        for e in edits:
                            self.editor.edit_pixels(*e, label=label)
        except ValueError as e:
            # put the layer back to the editor's state: the stroke is refused
            for t, *_ in edits:
                self.layer.data[t] = self.editor.labels[t]
            self.layer.refresh()
            self._refuse(f"Painting refused: {e}")

    # ------------------------------------------------------------------------------------
    # Keeping the views in step with the editor
    # ------------------------------------------------------------------------------------
    def _on_edit(self, ev):
        self._on_edit_frames(ev.frames, ev.description, ev.kind)

    def _on_edit_frames(self, frames, description, kind="do"):
        layer, ed = self.layer, self.editor
        if layer is None or ed is None or ed.in_group:
            return  # inside a group: refreshed once by its "group" event
        labels = ed.labels
        for t in frames:
            layer.data[t] = labels[t]
        if frames:
            layer.refresh()
        layer.metadata[LINEAGE_KEY] = ed.lineage  # the writer exports the corrected lineage
        self._update_tracks(frames)
        self._refresh_tree()
        self._review_timer.start()
        verb = {"undo": "Undone: ", "redo": "Redone: "}.get(kind, "")  # "do", "group": none
        self.history_info.setText(f"{verb}{description}")
        self._dirty = True
        if self.project_path is not None:
            self._autosave_timer.start()
        self._update_selection()

    def _tracks_data(self, frames=None) -> np.ndarray:
        """Tracks layer data ``[id, t, y, x]``; only ``frames`` (all when None) re-measured."""
        labels = self.editor.labels
        if frames is None:
            self._points = {}
        for t in range(labels.shape[0]) if frames is None else frames:
            self._points[t] = _frame_centroids(labels[t], t)
        data = np.concatenate([self._points[t] for t in sorted(self._points)] or
                              [np.zeros((0, 4))])
        return data[np.lexsort((data[:, 1], data[:, 0]))]

    def _update_tracks(self, frames=None):
        ed, layer = self.editor, self.layer
        if ed is None or layer is None:
            return
        data = self._tracks_data(frames)
        lineage = layer.metadata[LINEAGE_KEY]  # set from the editor just before
        if not len(data):
            if self.tracks_layer is not None and self.tracks_layer in self.viewer.layers:
                self.tracks_layer.visible = False
            return
        graph = division_graph(lineage, np.unique(data[:, 0]))
        tl = self.tracks_layer
        if tl is None or tl not in self.viewer.layers:
            stem = layer.name.rsplit(" ", 1)[0] if " " in layer.name else layer.name
            active = self.viewer.layers.selection.active
            self.tracks_layer = tl = self.viewer.add_tracks(
                data, **tracks_layer_kwargs(data, lineage, stem, layer.colormap,
                                            scale=tuple(layer.scale[-3:]),
                                            translate=tuple(layer.translate[-3:])))
            self.viewer.layers.selection.active = active
            return
        tl.visible = True
        if frames is None:  # on binding: the track lines take the colours of their cells
            tl.colormaps_dict = {"track_id": layer.colormap}
        tl.data = data  # napari rebuilds the tracks and clears the graph and features
        if graph:
            tl.graph = graph
        tl.features = track_features(data, lineage)
        if tl.color_by != "track_id":
            tl.color_by = "track_id"
        tl.metadata[LINEAGE_KEY] = lineage

    def _on_colormap(self, event=None):
        """New label colours ("shuffle colours"): track lines and tree bars follow."""
        tl = self.tracks_layer
        if tl is not None and tl in self.viewer.layers and self.layer is not None:
            tl.colormaps_dict = {"track_id": self.layer.colormap}
            tl.color_by = "track_id"
        self._refresh_tree(event)

    def _refresh_tree(self, event=None):
        ed, layer = self.editor, self.layer
        if ed is None or layer is None:
            return
        lineage = ed.lineage
        if event is None and self._tree_lineage is not None and \
                np.array_equal(lineage, self._tree_lineage):
            return  # a paint edit that changed no track: nothing to redraw
        self._tree_lineage = lineage
        self.lineage_view.set_lineage(ed.lineage, ed.shape[0],
                                      color=lambda i: _qcolor(layer.get_color(i)))
        self.lineage_view.set_time(self.current_frame())
        self.lineage_view.set_selection(self.primary, self.secondary)

    def _update_state(self):
        ed = self.editor
        bound = ed is not None
        for b in list(self.buttons.values()) + list(self.export_buttons.values()):
            b.setEnabled(bound)
        self.line_button.setEnabled(bound)
        if not bound:
            self.save_info.setText("")
            return
        self.buttons["undo"].setEnabled(ed.can_undo)
        self.buttons["redo"].setEnabled(ed.can_redo)
        self.buttons["undo"].setToolTip(
            f"Undo: {ed.history[-1]}  [Ctrl+Z]" if ed.can_undo else "Nothing to undo")
        self.buttons["redo"].setToolTip(
            f"Redo: {ed.redo_history[0]}  [Ctrl+Shift+Z]" if ed.can_redo else "Nothing to redo")
        for name in ("merge", "swap", "link", "mark_division"):
            self.buttons[name].setEnabled(self.primary is not None and self.secondary is not None)
        for name in ("delete_cell", "delete_track", "split", "cut", "unmark_division"):
            self.buttons[name].setEnabled(self.primary is not None)

    # ------------------------------------------------------------------------------------
    # Review list
    # ------------------------------------------------------------------------------------
    def refresh_review(self):
        """Re-list the events most likely to be wrong, most doubtful first."""
        self.review_list.blockSignals(True)
        self.review_list.clear()
        if self.editor is not None:
            with self._lock:
                cands = self.editor.review_candidates(limit=300)
            for c in cands:
                item = QListWidgetItem(f"frame {c.frame} · track {c.track_id}: {c.reason}")
                item.setData(Qt.ItemDataRole.UserRole, (c.frame, c.track_id, c.y, c.x))
                item.setToolTip(f"doubt {c.score:.2f}")
                self.review_list.addItem(item)
        self.review_list.blockSignals(False)

    def _on_review_clicked(self, item: QListWidgetItem):
        t, i, y, x = item.data(Qt.ItemDataRole.UserRole)
        self.goto(t, y, x)
        self.select(i)

    # ------------------------------------------------------------------------------------
    # Autosave
    # ------------------------------------------------------------------------------------
    def autosave(self):
        """Write the project in a background thread (skipped while one is running)."""
        if self.editor is None or self.project_path is None or not self._dirty:
            return
        if self._save_thread is not None and self._save_thread.is_alive():
            self._autosave_timer.start()  # try again once the running save is done
            return
        editor, path = self.editor, self.project_path
        self._dirty = False
        self.save_info.setText("Saving…")

        def job():
            try:
                with self._lock:
                    folder = editor.save(path)
            except Exception as e:  # noqa: BLE001 - shown to the user, who can export
                self._saved.emit(None, f"{type(e).__name__}: {e}")
            else:
                self._saved.emit(folder, "")

        self._save_thread = threading.Thread(target=job, name="track-correction-autosave",
                                             daemon=True)
        self._save_thread.start()

    def flush_autosave(self, timeout: float = 60.0):
        """Finish any pending save now (used on unbind and close)."""
        self._autosave_timer.stop()
        if self._save_thread is not None:
            self._save_thread.join(timeout)
        if self._dirty and self.editor is not None and self.project_path is not None:
            self.autosave()
            if self._save_thread is not None:
                self._save_thread.join(timeout)

    def _on_saved(self, folder, error: str):
        if error:
            self._dirty = True
            self.save_info.setText(f"<span style='color:#ff6060'>Autosave failed: {error}. "
                                   "Export your corrections.</span>")
            show_warning(f"Autosave of the corrections failed: {error}")
            return
        n = len(self.editor.history) if self.editor is not None else 0
        what = f"{n} correction{'s' if n != 1 else ''}" if n else "no corrections yet"
        where = ("beside the movie" if self._movie_file is not None else
                 f"in {Path(folder).parent} (the movie has no file; opening the same movie "
                 "again offers them back)")
        self.save_info.setText(f"Autosaved {_dt.datetime.now():%H:%M:%S} ({what}) in "
                               f"<b>{Path(folder).name}</b> {where}.")
        self.save_info.setToolTip(f"Every correction is saved to {folder}; opening the movie "
                                  "again offers to restore them.")

    # ------------------------------------------------------------------------------------
    # Project
    # ------------------------------------------------------------------------------------
    def _save_project_dialog(self):
        base = str(self._movie_file.parent) if self._movie_file is not None else ""
        path, _ = QFileDialog.getSaveFileName(self, "Save the project as a folder (created)",
                                              str(Path(base) / "cells.tracks"))
        if path:
            self.save_project(path)

    def save_project(self, path) -> Path | None:
        """Write the project (cells, lineage, edit history, the movie's location, the settings
        the cells were made with) to the folder ``path`` and keep autosaving there."""
        if self.editor is None:
            show_warning("Choose a tracked cells layer first.")
            return None
        path = Path(path)
        if not path.name.endswith(".tracks"):
            path = path.with_name(path.name + ".tracks")
        ed = self.editor
        ed.meta.update({"movie": str(self._movie_file) if self._movie_file else None,
                        "layer": self.layer.name,
                        "settings": self.layer.metadata.get("params")})
        try:
            with self._lock:
                ed.save(path)
        except (OSError, ValueError) as e:
            show_warning(f"Could not save the project: {e}")
            return None
        self.project_path = path
        self.layer.metadata[PROJECT_KEY] = str(path)
        self._dirty = False
        self.save_info.setText(f"Saved the project to <b>{path.name}</b>; corrections are "
                               f"autosaved there from now on.")
        return path

    # ------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------
    def _export_dialog(self, fmt: str):
        base = str(self._movie_file.parent) if self._movie_file is not None else ""
        if fmt == "ctc":
            path = QFileDialog.getExistingDirectory(self, "Export CTC result folder", base)
            if path and Path(path).is_dir() and any(Path(path).iterdir()):
                path = str(Path(path) / "RES")  # never fill a folder that holds other files
        else:
            filt = "GEFF zarr (*.zarr)" if fmt == "geff" else "CSV table (*.csv)"
            path, _ = QFileDialog.getSaveFileName(self, f"Export {fmt.upper()}", base, filt)
            if path and fmt == "geff" and not path.endswith(".zarr"):
                path += ".zarr"
            if path and fmt == "csv" and not path.endswith(".csv"):
                path += ".csv"
        if path:
            self.export(fmt, path)

    def export(self, fmt: str, path) -> Path | None:
        """Write the corrected result as ``"ctc"``, ``"geff"`` or ``"csv"`` (atomically)."""
        if self.editor is None:
            return None
        with self._lock:
            labels, lineage = self.editor.labels.copy(), self.editor.lineage
        kwargs = {} if fmt == "ctc" else {"overwrite": True}  # the save dialog confirmed it
        if fmt in ("geff", "csv"):
            # the layer's scale is the movie's calibration (time, y, x); 1 means unset
            dt, sy, sx = (float(v) for v in self.layer.scale[-3:])
            if (sy, sx) != (1.0, 1.0):
                kwargs["pixel_size"] = (sy, sx)
            if dt != 1.0:
                kwargs["frame_interval"] = dt
        if fmt == "csv":
            movie = self._movie_layer_for(labels.shape)
            if movie is not None:
                kwargs["images"] = movie.data  # each cell's mean intensity
        from napari_cosine_tracker.core.export import export

        try:
            out = export(labels, lineage, fmt, path, **kwargs)
        except (OSError, ValueError) as e:
            self._refuse(f"Export to {path} failed: {e}")
            return None
        show_info(f"Exported {len(lineage)} tracks to {out}")
        self.save_info.setText(f"Exported to {out}")
        return Path(out)

    def _movie_layer_for(self, shape):
        """The movie the cells belong to ("<movie> cells" comes from "<movie>"), if open."""
        name = self.layer.name
        stem = name[: -len(" cells")] if name.endswith(" cells") else None
        for l in self.viewer.layers:
            if isinstance(l, Image) and l.name == stem and tuple(l.data.shape) == tuple(shape):
                return l
        return None

    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.flush_autosave()
        super().closeEvent(event)


_GRIDS: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _frame_centroids(frame: np.ndarray, t: int) -> np.ndarray:
    """``[id, t, y, x]`` rows of one frame's cells (mask centroids), by bincount."""
    frame = np.asarray(frame)
    flat = frame.ravel()
    if not flat.size or flat.max() == 0:
        return np.zeros((0, 4))
    H, W = frame.shape
    if (H, W) not in _GRIDS:
        _GRIDS.clear()
        _GRIDS[(H, W)] = (np.repeat(np.arange(H, dtype=float), W),
                          np.tile(np.arange(W, dtype=float), H))
    yy, xx = _GRIDS[(H, W)]
    if int(flat.max()) < 4 * flat.size + 65536:
        key, values = flat.astype(np.intp, copy=False), None
    else:  # huge ids: compact them first (sorting is slower than counting)
        values, key = np.unique(flat, return_inverse=True)
    area = np.bincount(key)
    sy = np.bincount(key, weights=yy, minlength=len(area))
    sx = np.bincount(key, weights=xx, minlength=len(area))
    idx = np.flatnonzero(area)
    ids = idx if values is None else values[idx]
    keep = ids != 0
    idx, ids = idx[keep], ids[keep]
    return np.column_stack([ids.astype(float), np.full(len(ids), float(t)),
                            sy[idx] / area[idx], sx[idx] / area[idx]])


def _atom_pixels(atom):
    """``(t, ys, xs, values)`` per frame for one napari Labels history atom."""
    slice_key = getattr(atom, "slice_key", None)
    if slice_key is not None:  # _MaskedPaintAtom: bounding box + mask + one new value
        shape = tuple(s.stop - s.start for s in slice_key)
        mask = atom.mask if atom.mask is not None else np.ones(shape, bool)
        idx = np.nonzero(mask)
        idx = [i + s.start for i, s in zip(idx, slice_key)]
        vals = np.full(len(idx[0]), int(atom.new_value), np.int64)
    else:  # (indices, old values, new values)
        indices, _, new = atom
        idx = [np.asarray(i).ravel() for i in indices]
        vals = np.broadcast_to(np.asarray(new, np.int64), idx[0].shape).ravel()
    if len(idx) < 3 or not len(idx[0]):
        return []
    t_all, ys, xs = idx[-3], idx[-2], idx[-1]
    out = []
    for t in np.unique(t_all):
        m = t_all == t
        out.append((int(t), ys[m].astype(np.intp), xs[m].astype(np.intp), vals[m]))
    return out
