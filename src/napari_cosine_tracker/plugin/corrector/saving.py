"""Saving: the debounced background autosave, Save project as…, and the exports (CTC,
GEFF, CSV), all atomic."""

from __future__ import annotations

import datetime as _dt
import threading
from pathlib import Path

from napari.layers import Image
from napari.utils.notifications import show_info, show_warning
from qtpy.QtWidgets import QFileDialog

from napari_cosine_tracker.core.edit import PROJECT_KEY


class Saving:
    """Autosave, project and exports of the corrected result."""

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
