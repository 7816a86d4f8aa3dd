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

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from napari.layers import Labels, Tracks
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_cosine_tracker.core.edit import TrackEditor

from .corrector.binding import Binding
from .corrector.common import LINE_LAYER, SELECTION_LAYER, SHORTCUTS, key_text
from .corrector.editing import Editing
from .corrector.saving import Saving
from .corrector.selection import Selection
from .corrector.views import Views
from .docking import join_as_tab
from .lineage_view import LineageView

if TYPE_CHECKING:
    import napari

__all__ = ["CorrectionWidget", "SHORTCUTS", "SELECTION_LAYER", "LINE_LAYER"]


class CorrectionWidget(Binding, Selection, Editing, Views, Saving, QWidget):
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
            b = QPushButton(f"{text}  [{key_text(key)}]")
            b.setToolTip(f"{tip}\nShortcut: {key_text(key)}")
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

        review_box = self.review_box = QGroupBox("Review: most doubtful first")
        v = QVBoxLayout(review_box)
        self.review_list = QListWidget()
        self.review_list.setToolTip("Events most likely to be wrong. Click one to go there.")
        self.review_list.itemClicked.connect(self._on_review_clicked)
        self.review_list.currentItemChanged.connect(
            lambda cur, _prev: cur is not None and self._on_review_clicked(cur))
        # about a dozen rows at least: the list is where a long correction session starts
        self.review_list.setMinimumHeight(12 * self.review_list.fontMetrics().height() + 12)
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










    # ------------------------------------------------------------------------------------
    # Binding
    # ------------------------------------------------------------------------------------








    # ------------------------------------------------------------------------------------
    # Keys
    # ------------------------------------------------------------------------------------



    # ------------------------------------------------------------------------------------
    # Time and position
    # ------------------------------------------------------------------------------------



    # ------------------------------------------------------------------------------------
    # Selection
    # ------------------------------------------------------------------------------------







    # ------------------------------------------------------------------------------------
    # Actions
    # ------------------------------------------------------------------------------------






    # ------------------------------------------------------------------------------------
    # Painting with napari's tools
    # ------------------------------------------------------------------------------------

    # ------------------------------------------------------------------------------------
    # Keeping the views in step with the editor
    # ------------------------------------------------------------------------------------







    # ------------------------------------------------------------------------------------
    # Review list
    # ------------------------------------------------------------------------------------


    # ------------------------------------------------------------------------------------
    # Autosave
    # ------------------------------------------------------------------------------------



    # ------------------------------------------------------------------------------------
    # Project
    # ------------------------------------------------------------------------------------


    # ------------------------------------------------------------------------------------
    # Export
    # ------------------------------------------------------------------------------------



    def closeEvent(self, event):  # noqa: N802 - Qt name
        self.flush_autosave()
        super().closeEvent(event)
