"""Edits: a key or button becomes a core user action (core.user_actions); a paint stroke
with napari's own tools becomes one undoable editor edit."""

from __future__ import annotations

import numpy as np
from napari.layers import Shapes
from napari.utils.notifications import show_warning

from napari_cosine_tracker.core import user_actions

from ..napari_private import paint_event_pixels, reset_undo_history
from .common import LINE_LAYER


class Editing:
    """Turning keys, buttons, cut lines and paint strokes into editor edits."""

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

    def _on_paint(self, event):
        """A finished brush/fill/eraser/polygon stroke -> one undoable editor edit."""
        if self.editor is None:
            return
        per_frame: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for atom in event.value:
            for t, ys, xs, vals in paint_event_pixels(atom):
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
