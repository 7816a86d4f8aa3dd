"""Which Labels layer is being corrected: choosing it, binding it to a TrackEditor (with
the saved project offered back), and letting it go."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
from napari.layers import Image, Labels, Tracks
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QMessageBox

from napari_cosine_tracker.core.buffers import copy_labels
from napari_cosine_tracker.core.edit import (
    PROJECT_KEY,
    TrackEditor,
    autosave_project_path,
    default_project_path,
)

from ..layers import CORRECTING_KEY, LINEAGE_KEY, OUTPUT_KEY, PREVIEW_KEY, name_time_axis
from ..napari_private import reset_undo_history
from .common import SELECTION_LAYER


class Binding:
    """Binding a tracked Labels layer to the editor, and unbinding it."""

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

    def bind(self, layer: Labels, restore: bool | None = None) -> TrackEditor:
        """Correct ``layer`` from now on; ``restore``: use a saved project (None: ask)."""
        if layer is self.layer and self.editor is not None:
            return self.editor
        self.unbind()
        preview = layer.metadata.pop(PREVIEW_KEY, None)
        if preview:  # frames showing other settings: corrections are of the tracking
            for t, frame in sorted(preview.items()):
                layer.data[t] = frame
            show_info(f"Frames {', '.join(map(str, sorted(preview)))} showed a live preview of "
                      "other settings; the tracking is back in them for correcting.")
            preview.clear()
            layer.refresh()
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
            # the editor's own copy: on disk for a long movie (core.buffers), so correcting
            # it does not hold the whole stack in memory twice
            editor = TrackEditor(copy_labels(data), lineage, copy=False, repair=True,
                                 meta={"movie": str(movie) if movie else None,
                                       "layer": layer.name})
        self.editor, self.layer, self.project_path = editor, layer, project
        self._movie_file = movie
        self._set_layer_data(copy_labels(editor.labels))
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
