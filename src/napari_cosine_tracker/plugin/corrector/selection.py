"""Selecting tracks: keyboard shortcuts, clicks on the canvas and in the lineage view, the
time slider, and the selection's outline."""

from __future__ import annotations

import numpy as np

from .common import SELECTION_LAYER, SHORTCUTS


class Selection:
    """The first and second selected tracks and how they are chosen and shown."""

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
