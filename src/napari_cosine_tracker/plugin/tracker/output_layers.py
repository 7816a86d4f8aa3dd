"""The run's output layers: the cells (Labels), their tracks (Tracks) and the embedding
colours, on the movie layer's scale and translate, shown step by step so the viewer never
freezes."""

from __future__ import annotations

import numpy as np
from napari.layers import Tracks
from napari.utils.colormaps import label_colormap
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer

from napari_cosine_tracker.core.track import keep_ids

from ..layers import (
    CORRECTING_KEY,
    LINEAGE_KEY,
    OUTPUT_KEY,
    PREVIEW_KEY,
    tracks_from_labels,
    tracks_layer_kwargs,
)
from .common import pipeline_module


class OutputLayers:
    """Making, filling and showing the output layers."""

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
        zeros = pipeline_module().label_buffer((T, Y, X))  # on disk for a long movie
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
        """Show a pair clustering on frames t-1 and t.

        Over a tracking (live tuning), a cell the new settings leave as it was keeps its
        track's id, so its colour still matches the Tracks layer; the rest get ids no track
        uses. During a run, ids are shifted so the frames shown so far stay distinct.
        """
        lab = self.labels_layer
        if lab is None or lab not in self.viewer.layers:
            return
        if self._tracked:
            for tt in (t - 1, t):  # the tracked frames, kept before a preview covers them
                self._backup.setdefault(tt, np.array(lab.data[tt]))
            lab.metadata[PREVIEW_KEY] = self._backup  # for the correction widget
            la, lb, self._next_preview_id = keep_ids(la, lb, self._backup[t - 1],
                                                     self._backup[t], self._next_preview_id)
        else:
            base = self._next_preview_id - 1
            n = int(max(la.max(initial=0), lb.max(initial=0)))
            la, lb = (np.where(f > 0, f.astype(np.int64) + base, 0) for f in (la, lb))
            self._next_preview_id += n
        for tt, frame in ((t - 1, la), (t, lb)):
            lab.data[tt] = frame.astype(lab.data.dtype, copy=False)
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
        lab.metadata.pop(PREVIEW_KEY, None)
        lab.metadata["params"] = {n: getattr(params, n) for n in self.param_widgets}
        self._applied_params = params
        self._backup.clear()
        self._tracked = True
        self._stale = False
        # live previews over this result number their new cells after its tracks
        self._next_preview_id = int(lineage[:, 0].max(initial=0)) + 1 if len(lineage) else 1
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
