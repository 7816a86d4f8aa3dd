"""Section 5, output: exporting the tracked cells as a Cell Tracking Challenge result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QFileDialog, QPushButton

from napari_cosine_tracker.core.workflow import Phase, step_error

from ..layers import LINEAGE_KEY
from .common import group_box, note


class OutputSection:
    """Export of the result on display."""

    def _build_output(self):
        """Export and what was found."""
        self.export_button = QPushButton("Export CTC result…")
        self.export_button.setToolTip("Save the tracked cells as a Cell Tracking Challenge "
                                      "result folder: one mask image per frame (maskTTT.tif) "
                                      "and the lineage (res_track.txt).")
        self.output_info = note()
        return group_box("5 · Output", self.export_button, self.output_info)

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
        from ..writer import write_result

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
