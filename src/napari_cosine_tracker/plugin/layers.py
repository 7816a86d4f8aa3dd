"""Conversions between the core's data structures and napari layer data.

No Qt here (napari only for its colormaps), so reader, writer, sample data and widget share one
definition of how a tracking result looks in napari:

* tracked labels ``(T, Y, X)`` -> a Labels layer whose ``metadata["lineage"]`` holds the
  ``(N, 4)`` lineage ``id, first, last, parent``;
* the same result -> a Tracks layer: one point per cell and frame at the mask centroid
  ``[track_id, t, y, x]`` and the division graph ``{daughter: [parent]}``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "name_time_axis",
    "LINEAGE_KEY",
    "CORRECTING_KEY",
    "OUTPUT_KEY",
    "PREVIEW_KEY",
    "tracks_from_labels",
    "division_graph",
    "parents_from_graph",
    "lineage_for_labels",
    "result_layer_data",
    "tracks_layer_kwargs",
    "track_features",
    "contrast_limits",
]

#: Key of the lineage ``(N, 4)`` array in a tracked Labels layer's ``metadata``.
LINEAGE_KEY = "lineage"

#: Key in the ``metadata`` of every layer the tracker widget makes, with its kind ("labels",
#: "tracks", "embedding"): such layers are never offered as a movie.
OUTPUT_KEY = "cosine_tracker_output"

#: In a tracked Labels layer's ``metadata`` while some frames show a live preview of other
#: settings instead of the tracking: ``{frame: the tracked frame}``. The correction widget
#: puts those frames back before it corrects the layer (corrections are of a tracking).
PREVIEW_KEY = "live_preview"

#: Set in a Labels layer's ``metadata`` while the correction widget edits it: the tracker
#: widget then writes new results into a new layer instead of over the corrections.
CORRECTING_KEY = "correcting"


def name_time_axis(viewer) -> None:
    """Call the movie's axes "time", "y", "x" where napari still shows its default numbers
    (a slider labelled "-3" means nothing to a user); labels a user set are kept."""
    dims = viewer.dims
    if dims.ndim < 3:
        return
    if all(str(a).lstrip("-").isdigit() for a in dims.axis_labels[-3:]):
        labels = list(dims.axis_labels)
        labels[-3:] = ["time", "y", "x"]
        dims.axis_labels = labels


def tracks_from_labels(labels) -> np.ndarray:
    """Centroid of every mask in every frame, as napari Tracks data ``[id, t, y, x]``.

    Parameters
    ----------
    labels : (T, Y, X) integer array or Movie
        Values are track ids (0 = background); read one frame at a time.

    Returns
    -------
    ndarray, float64, shape (M, 4)
        Sorted by track id, then time (the order napari keeps internally).
    """
    from napari_cosine_tracker.core.link import cell_features

    # One frame at a time (a lazy Movie stays lazy); centroids measured where the linker does.
    cells = cell_features(np.asarray(labels[t]) for t in range(len(labels)))
    if len(cells) == 0:
        return np.zeros((0, 4))
    data = np.column_stack([cells.label, cells.frame, cells.y, cells.x]).astype(np.float64)
    return data[np.lexsort((data[:, 1], data[:, 0]))]


def division_graph(lineage, present_ids=None) -> dict[int, list[int]]:
    """napari Tracks ``graph`` ``{daughter: [parent]}`` from a lineage ``(N, 4)``.

    Links whose daughter or parent has no mask (``present_ids``) are left out, because napari
    refuses a graph naming tracks that are not in the data.
    """
    lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
    present = None if present_ids is None else {int(i) for i in np.asarray(present_ids).ravel()}
    graph = {}
    for tid, _, _, parent in lin.tolist():
        if parent == 0:
            continue
        if present is not None and (tid not in present or parent not in present):
            continue
        graph[int(tid)] = [int(parent)]
    return graph


def parents_from_graph(graph) -> dict[int, int]:
    """``{daughter: parent}`` from a napari Tracks graph (first parent where several)."""
    out = {}
    for child, parents in (graph or {}).items():
        parents = list(np.atleast_1d(parents))
        if parents:
            out[int(child)] = int(parents[0])
    return out


def lineage_for_labels(labels, lineage=None, parents=None) -> np.ndarray:
    """A lineage that agrees with ``labels``, keeping the division links we know of.

    Painting or deleting cells in napari changes which frames a track covers, so the stored
    lineage may no longer match. The ``first``/``last`` columns are therefore always taken
    from the labels; parents come from ``lineage`` (or the ``parents`` mapping) for tracks that
    are still present and whose parent is still present and ends before the daughter starts.

    Raises
    ------
    napari_cosine_tracker.core.io.MovieError
        If a track disappears and comes back (CTC tracks have no gaps).
    """
    from napari_cosine_tracker.core.io import lineage_from_labels

    known = dict(parents or {})
    if lineage is not None:
        lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
        known.update({int(r[0]): int(r[3]) for r in lin if r[3] != 0})
    lin = lineage_from_labels(labels)
    first = {int(r[0]): int(r[1]) for r in lin}
    last = {int(r[0]): int(r[2]) for r in lin}
    keep = {c: p for c, p in known.items()
            if c in first and p in first and last[p] < first[c]}
    lin[:, 3] = [keep.get(int(i), 0) for i in lin[:, 0]]
    return lin


def track_features(data, lineage) -> dict:
    """Measurements per point of a Tracks layer (rows ``[track_id, t, y, x]`` sorted by track
    then time): ``speed`` (pixels per frame from the track's previous point; nan on its
    first), the track's ``track_duration`` (frames) and ``generation`` (0: no mother).
    Shown in napari's layer features and usable for *color by*."""
    from napari_cosine_tracker.core.measure import track_measurements

    data = np.asarray(data, np.float64).reshape(-1, 4)
    lin = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
    tid, t = data[:, 0].astype(np.int64), data[:, 1]
    speed = np.full(len(data), np.nan)
    same = (tid[1:] == tid[:-1]) & (t[1:] == t[:-1] + 1)
    step = np.hypot(np.diff(data[:, 2]), np.diff(data[:, 3]))
    speed[1:][same] = step[same]
    cells = {"track_id": tid, "y": data[:, 2], "x": data[:, 3], "speed": speed}
    per_track = track_measurements(None, lin, cells=cells)
    k = {int(i): j for j, i in enumerate(per_track["track_id"].tolist())}
    rows = np.array([k.get(int(i), -1) for i in tid.tolist()], np.int64)
    known = rows >= 0
    duration = np.full(len(data), np.nan)
    generation = np.zeros(len(data), np.int64)
    duration[known] = per_track["duration"][rows[known]]
    generation[known] = per_track["generation"][rows[known]]
    return {"speed": speed, "track_duration": duration, "generation": generation}


def tracks_layer_kwargs(data, lineage, name: str, colormap, metadata: dict | None = None,
                        **extra) -> dict:
    """Keyword arguments of every Tracks layer this plugin makes (reader, tracker, link and
    correction widgets): the division graph of the tracks in ``data``, the lineage in the
    metadata, and each track line in the colour of its cell (``colormap``: the Labels
    layer's)."""
    lineage = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
    return {"name": f"{name} tracks", "graph": division_graph(lineage, np.unique(data[:, 0])),
            "tail_length": 10, "tail_width": 3, "blending": "translucent",
            "colormaps_dict": {"track_id": colormap}, "color_by": "track_id",
            "features": track_features(data, lineage),
            "metadata": {LINEAGE_KEY: lineage, **(metadata or {})}, **extra}


def result_layer_data(labels, lineage, name: str = "cells", *, scale=None,
                      tracks=None) -> list[tuple]:
    """napari layer data tuples for a tracking result: a Labels layer and a Tracks layer.

    The Labels layer carries the lineage in ``metadata["lineage"]`` so the writer can export
    it; both layers get the same colormap, so a cell's track line has its mask's colour.
    ``labels`` may be None (a graph without masks: the Tracks layer only, from ``tracks``,
    rows ``[track_id, t, y, x]``); ``scale`` is the layers' ``(t, y, x)`` scale.
    """
    from napari.utils.colormaps import label_colormap

    cmap = label_colormap()
    lineage = np.asarray(lineage, dtype=np.int64).reshape(-1, 4)
    extra = {} if scale is None else {"scale": tuple(float(s) for s in scale)}
    out = []
    if labels is not None:
        labels = np.asarray(labels)
        out.append((labels, {"name": f"{name} tracked", "metadata": {LINEAGE_KEY: lineage},
                             "colormap": cmap, "opacity": 0.55, **extra}, "labels"))
    data = tracks_from_labels(labels) if tracks is None else np.asarray(tracks, np.float64)
    if len(data):
        out.append((data, tracks_layer_kwargs(data, lineage, name, cmap, **extra), "tracks"))
    return out


def contrast_limits(movie, n_frames: int = 3, name: str | None = None) -> tuple[float, float]:
    """Display range from a few frames (0.1 and 99.9 percentiles), without reading the movie.

    napari would otherwise use the full range of the pixel type for lazy data, which shows a
    16-bit movie almost black. The frames sampled always include the one napari shows first
    (the middle one, ``(T - 1) // 2``), so a frame that cannot be shown fails here, while the
    movie is being opened, rather than inside napari's slicer.

    Parameters
    ----------
    movie : (T, Y, X) array or Movie
    n_frames : int
        How many frames to sample: the first shown, then the first and last.
    name : str, optional
        What error messages call the movie (its path); a Movie names its own files.

    Raises
    ------
    napari_cosine_tracker.core.io.MovieError
        A sampled frame holds NaN or Inf values (no display range can be computed).
    """
    from napari_cosine_tracker.core.io import MovieError

    T = len(movie)
    ts = list(dict.fromkeys([(T - 1) // 2, 0, T - 1]))[:max(n_frames, 1)]
    parts = []
    for t in ts:
        frame = np.asarray(movie[t], dtype=np.float32)
        if not np.isfinite(frame).all():
            raise MovieError(
                f"{name or 'movie'}: frame {t} contains NaN or Inf values; replace them "
                "(e.g. numpy.nan_to_num) or re-export the movie without them")
        parts.append(frame.ravel()[::7])
    lo, hi = np.percentile(np.concatenate(parts), [0.1, 99.9])
    if not hi > lo:
        hi = lo + 1
    return float(lo), float(hi)
