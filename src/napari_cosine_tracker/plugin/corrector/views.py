"""Keeping the views in step with the editor: the labels' changed frames, the Tracks layer,
the lineage view, the buttons, and the review list of doubtful events."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidgetItem

from ..layers import LINEAGE_KEY, division_graph, track_features, tracks_layer_kwargs
from .common import frame_centroids, qcolor


class Views:
    """Redrawing what an edit, undo or redo changed."""

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
            self._points[t] = frame_centroids(labels[t], t)
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
                                      color=lambda i: qcolor(layer.get_color(i)))
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
            n = len(cands)
            self.review_box.setTitle(
                f"Review: {n} doubtful event{'s' if n != 1 else ''}, most doubtful first"
                if n else "Review: nothing doubtful found")
        self.review_list.blockSignals(False)

    def _on_review_clicked(self, item: QListWidgetItem):
        t, i, y, x = item.data(Qt.ItemDataRole.UserRole)
        self.goto(t, y, x)
        self.select(i)
