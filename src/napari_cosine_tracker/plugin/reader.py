"""napari reader: movies (multi-page TIFF, CTC image folder) and CTC tracking results.

* a CTC result folder (``maskTTT.tif`` + ``res_track.txt``) or a ground-truth ``TRA`` folder
  (``man_trackTTT.tif`` + ``man_track.txt``) opens as a Labels layer of track ids plus a
  Tracks layer with the division graph;
* a ground-truth ``SEG`` folder (``man_segTTT.tif``, often only some frames annotated) opens
  as a Labels layer with the annotated masks at their frame numbers;
* a GEFF store (ours, funtracks'/motile_tracker's, geff's CTC converter's) opens as the
  same Labels + Tracks pair, the Labels from its linked segmentation (Tracks alone when it
  links none), on the pixel size and frame interval its axes declare;
* a saved project (``*.tracks``: the cells as corrected, their lineage and the edit history)
  opens as the movie it belongs to (where its file is still there) and the Labels + Tracks
  pair; the correction widget takes the project's history back, so undo works;
* a folder of numbered TIFF frames, a multi-page TIFF ``(T, Y, X)`` or ``(T, C, Y, X)``, or
  a microscope file (OME-TIFF, OME-Zarr, ND2, CZI, LIF through bioio) opens lazily as one
  Image layer per channel (frames are read when shown), on the file's pixel size and frame
  interval; the tracker's movie list is then the channel picker.

``napari_get_reader`` only checks file names and TIFF headers, and declines (returns None)
what it cannot open, so napari's own readers still get single images and the like.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import tifffile

from napari_cosine_tracker.core import io as cio
from napari_cosine_tracker.core.edit import PROJECT_KEY, TrackEditor, is_project
from napari_cosine_tracker.core.geffio import is_geff, read_geff

from .layers import contrast_limits, result_layer_data

__all__ = ["napari_get_reader", "read_path", "read_result_folder", "read_movie_layer",
           "read_seg_folder", "read_geff_layers", "read_project"]

_TRACK_FILES = ("res_track.txt", "man_track.txt")


def _track_file(folder: Path) -> Path | None:
    for name in _TRACK_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


def _seg_files(folder: Path) -> dict[int, Path]:
    out = {}
    for p in folder.iterdir():
        m = _SEG.match(p.name)
        if m:
            out[int(m.group(1))] = p
    return out


_SEG = re.compile(r"^man_seg_?(\d+)\.tiff?$", re.IGNORECASE)


def napari_get_reader(path):
    """Return a reader function if ``path`` is a movie or a CTC result this plugin opens."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if path.is_dir():
        if (_track_file(path) is not None or _seg_files(path) or is_geff(path)
                or is_project(path)):
            return read_path
        try:
            cio.read_movie(path)
        except (cio.MovieError, OSError):
            return None
        return read_path
    if (path.suffix.lower() in cio.TIFF_SUFFIXES and path.is_file()) or cio._is_bioio(path):
        try:
            _channels(path)  # headers only: declines single images and volumes
        except (cio.MovieError, OSError):
            return None
        return read_path
    return None


def _channels(path) -> list:
    """The movie at ``path``, one lazy Movie per channel (one for a single-channel movie)."""
    try:
        return [cio.read_movie(path)]
    except cio.MovieError as e:
        if "multichannel movie" not in str(e):
            raise
    first = cio.read_movie(path, channel=0)
    names = first.channel_names
    return [first] + [cio.read_movie(path, channel=c) for c in range(1, len(names))]


def read_path(path) -> list[tuple]:
    """Layer data tuples for a movie or result ``path`` (see module docstring)."""
    if isinstance(path, list):
        path = path[0]
    path = Path(path)
    if path.is_dir() and _track_file(path) is not None:
        return read_result_folder(path)
    if path.is_dir() and is_geff(path):
        return read_geff_layers(path)
    if is_project(path):
        return read_project(path)
    if path.is_dir() and _seg_files(path):
        return [read_seg_folder(path)]
    if path.is_dir() and not cio._is_bioio(path):
        return [read_movie_layer(path)]
    return [read_movie_layer(path, movie) for movie in _channels(path)]


def read_seg_folder(folder) -> tuple:
    """A Labels layer of a CTC ``SEG`` folder: annotated frames at their frame numbers.

    The movie length is taken from the sibling ``TRA`` folder's track file when there is one
    (annotations rarely cover the last frame), else from the last annotated frame.
    """
    folder = Path(folder)
    files = _seg_files(folder)
    first = np.asarray(tifffile.imread(files[min(files)]))
    n = max(files) + 1
    tra = folder.parent / "TRA" / "man_track.txt"
    if tra.is_file():
        n = max(n, int(cio.read_lineage(tra)[:, 2].max(initial=0)) + 1)
    labels = np.zeros((n,) + first.shape, first.dtype)
    for t, p in files.items():
        labels[t] = tifffile.imread(p)
    name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
    return (labels, {"name": name, "opacity": 0.55,
                     "metadata": {"annotated_frames": sorted(files)}}, "labels")


def read_movie_layer(path, movie=None) -> tuple:
    """An Image layer tuple for a movie (or one channel of it), kept lazy (a
    :class:`~core.io.Movie`), on its pixel size and frame interval where the file has them;
    a channel's layer is named after the channel."""
    movie = cio.read_movie(path) if movie is None else movie
    path = Path(path)
    name = path.name
    for suffix in sorted(cio.BIOIO_SUFFIXES + cio.TIFF_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix) and (suffix in cio.BIOIO_SUFFIXES or not path.is_dir()):
            name = name[:-len(suffix)]
            break
    metadata = {"source_path": str(path)}
    if movie.channel is not None and len(movie.channel_names) > 1:
        name = f"{name} [{movie.channel_names[movie.channel]}]"
        metadata["channel"] = movie.channel
    meta = {"name": name, "contrast_limits": contrast_limits(movie), "metadata": metadata}
    if movie.pixel_size is not None or movie.frame_interval is not None:
        sy, sx = movie.pixel_size or (1.0, 1.0)
        meta["scale"] = (movie.frame_interval or 1.0, sy, sx)
    return (movie, meta, "image")


def read_result_folder(folder) -> list[tuple]:
    """A Labels layer of track ids (lineage in its metadata) and a Tracks layer.

    Result folders (``res_track.txt``) read their ``maskTTT.tif`` frames; ground-truth ``TRA``
    folders (``man_track.txt``) their ``man_trackTTT.tif`` frames.
    """
    folder = Path(folder)
    track_file = _track_file(folder)
    if track_file is None:
        raise cio.MovieError(f"{folder}: no res_track.txt or man_track.txt; not a CTC result "
                             "or TRA folder")
    if track_file.name == "res_track.txt":
        labels, lineage = cio.read_ctc_result(folder)
        name = folder.name
    else:
        lineage = cio.read_lineage(track_file)
        labels = cio.read_movie(folder)
        name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
    labels = np.asarray(labels)
    return result_layer_data(labels, lineage, name=name)


def read_geff_layers(path) -> list[tuple]:
    """Labels (the linked segmentation, relabelled to track ids) + Tracks of a GEFF store,
    scaled by its pixel size and frame interval; ready for the correction widget."""
    path = Path(path)
    tracks = read_geff(path)
    scale = None
    if tracks.pixel_size is not None or tracks.frame_interval is not None:
        sy, sx = tracks.pixel_size or (1.0, 1.0)
        scale = (tracks.frame_interval or 1.0, sy, sx)
    name = path.name[:-5] if path.name.endswith(".zarr") else path.stem
    layers = result_layer_data(tracks.labels, tracks.lineage, name=name, scale=scale,
                               tracks=tracks.cells if tracks.labels is None else None)
    for _, meta, _ in layers:
        meta.setdefault("metadata", {})["source_path"] = str(path)
        if tracks.notes:
            meta["metadata"]["notes"] = list(tracks.notes)
    return layers


def read_project(path) -> list[tuple]:
    """The movie (if its file is there), Labels and Tracks of a saved project; the Labels
    layer names the project (``metadata["project_path"]``) so the correction widget continues
    it, edit history and all."""
    path = Path(path)
    ed = TrackEditor.open(path)
    movie = ed.meta.get("movie")
    layers = []
    name = path.name[: -len(".tracks")] if path.name.endswith(".tracks") else path.name
    if movie and Path(movie).exists():
        try:
            layers.append(read_movie_layer(movie))
            name = layers[0][1]["name"]
        except (cio.MovieError, OSError):
            pass  # the cells still open; the movie can be opened by hand
    out = result_layer_data(np.array(ed.labels), ed.lineage, name=name)
    for _, meta, _ in out:
        meta.setdefault("metadata", {})[PROJECT_KEY] = str(path)
        if movie:
            meta["metadata"]["source_path"] = str(movie)
    out[0][1]["name"] = f"{name} cells"  # the tracker's name for cells: the pair stays linked
    return layers + out
