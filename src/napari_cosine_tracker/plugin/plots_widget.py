"""Dock widget "Cell and track plots": the summary plots of a tracked Labels layer.

Draws :func:`napari_cosine_tracker.core.plots.summary_figure` (cells per frame, track
durations, speeds, divisions) on a matplotlib canvas, in the layer's physical units when its
scale says so (the time axis' scale as the frame interval, y/x as the pixel size), redraws
when the layer is edited, and saves the figure as PNG, SVG or PDF.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import ComboBox, Container
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from napari.layers import Labels
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QFileDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_cosine_tracker.core.io import MovieError
from napari_cosine_tracker.core.measure import Calibration
from napari_cosine_tracker.core.plots import save_figure, summary_figure

from .docking import join_as_tab
from .layers import LINEAGE_KEY, lineage_for_labels, name_time_axis

__all__ = ["PlotsWidget"]


class PlotsWidget(QWidget):
    """Summary plots of a tracked Labels layer (see the module docstring)."""


    _cosine_tracker_panel = True  # see docking.PANEL_MARKER

    def showEvent(self, event):  # noqa: N802 - Qt name
        join_as_tab(self)  # beside the plugin's other panels, as a tab
        super().showEvent(event)

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer_combo = ComboBox(label="Cells", choices=self._choices,
                                    tooltip="A tracked Labels layer (its lineage in metadata).")
        self.figure = Figure(figsize=(5, 4.5), layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.refresh_button = QPushButton("Refresh")
        self.save_button = QPushButton("Save figure…")
        self.save_button.setToolTip("Save the plots as PNG, SVG or PDF.")
        self.info = QLabel("")
        self.info.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.refresh_button)
        row.addWidget(self.save_button)
        lay = QVBoxLayout(self)
        lay.addWidget(Container(widgets=[self.layer_combo]).native)
        lay.addWidget(self.canvas, 1)
        lay.addLayout(row)
        lay.addWidget(self.info)
        self._redraw = QTimer(self, singleShot=True, interval=500)  # edits come in bursts
        self._redraw.timeout.connect(self.refresh)
        self.refresh_button.clicked.connect(self.refresh)
        self.save_button.clicked.connect(self._save_dialog)
        self.layer_combo.changed.connect(self._on_layer)
        self.viewer.layers.events.inserted.connect(self._update_choices)
        self.viewer.layers.events.removed.connect(self._update_choices)
        self._watched = None
        name_time_axis(self.viewer)
        self._on_layer()

    def _choices(self, *_):
        return [l for l in self.viewer.layers if isinstance(l, Labels) and l.ndim == 3]

    def _update_choices(self, *_):
        name_time_axis(self.viewer)
        self.layer_combo.reset_choices()

    @property
    def layer(self) -> Labels | None:
        return self.layer_combo.value

    def _on_layer(self, *_):
        if self._watched is not None:
            try:
                self._watched.events.data.disconnect(self._on_edit)
                self._watched.events.paint.disconnect(self._on_edit)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._watched = self.layer
        if self._watched is not None:
            self._watched.events.data.connect(self._on_edit)
            self._watched.events.paint.connect(self._on_edit)
        self.refresh()

    def _on_edit(self, *_):
        self._redraw.start()  # restarts the wait: one redraw after a burst of edits

    def calibration(self) -> Calibration:
        """Pixel size and frame interval from the layer's scale (1 means: not set)."""
        layer = self.layer
        if layer is None:
            return Calibration()
        dt, sy, sx = (float(v) for v in layer.scale[-3:])
        return Calibration.of(None if sy == sx == 1.0 else (sy, sx), None if dt == 1.0 else dt)

    def refresh(self):
        """Redraw the plots for the chosen layer."""
        layer = self.layer
        if layer is None:
            self.figure.clear()
            self.canvas.draw_idle()
            self.info.setText("Choose a tracked cells layer.")
            return
        labels = np.asarray(layer.data)
        try:
            lineage = lineage_for_labels(labels, layer.metadata.get(LINEAGE_KEY))
        except MovieError as e:  # e.g. a live preview, not a tracking result
            self.figure.clear()
            self.canvas.draw_idle()
            self.info.setText(f"{layer.name} is not a tracking result ({e}).")
            return
        summary_figure(labels, lineage, self.calibration(), figure=self.figure)
        self.canvas.draw_idle()
        n_div = len(set(lineage[lineage[:, 3] > 0, 3].tolist()))
        self.info.setText(f"{layer.name}: {len(lineage)} tracks, {n_div} divisions.")

    def save(self, path) -> None:
        """Save the current plots (format from the suffix: .png, .svg, .pdf)."""
        try:
            out = save_figure(self.figure, path, overwrite=True)
        except (OSError, ValueError) as e:
            show_warning(f"Could not save the plots: {e}")
            return
        show_info(f"Saved the plots to {out}")
        self.info.setText(f"Saved to {out}")

    def _save_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save the plots", "tracks_summary.svg",
                                              "SVG (*.svg);;PNG (*.png);;PDF (*.pdf)")
        if path:
            self.save(path)
