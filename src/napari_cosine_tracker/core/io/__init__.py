"""Movies and Cell Tracking Challenge (CTC) folders: lazy reading, checked, atomic writing.

Movies
    :func:`read_movie` opens a CTC image folder (``t000.tif`` ...), any folder of numbered
    TIFFs, or one multi-page TIFF ``(T, Y, X)``; :func:`as_movie` wraps an in-memory array.
    Both return a :class:`Movie`: ``shape == (T, Y, X)``, ``dtype``, ``len()``, and
    ``movie[t]`` reads one 2-D frame on demand (memory-mapped where the file allows).
    Headers are checked up front without reading pixels; bad input raises :class:`MovieError`
    naming the file, the problem and the fix.

CTC folders
    Ground truth (``SEG/man_segTTT.tif``, ``TRA/man_trackTTT.tif``, ``TRA/man_track.txt``) is
    read by :func:`read_ctc_gt`; results (``maskTTT.tif`` + ``res_track.txt``) are written by
    :func:`write_ctc_result` into a temporary sibling folder that then replaces the old one,
    so an interrupted export never leaves a half-written result. :func:`slice_ctc_gt` and
    :func:`slice_movie_folder` cut a time window out of a sequence, renumbered from 0, so
    held-out frames can be scored with the official measures.

Lineage
    An ``int64`` array ``(N, 4)`` of rows ``id, first, last, parent`` -- the CTC ``L B E P``
    lines (:func:`read_lineage`, :func:`write_lineage`, :func:`lineage_from_labels`).

Modules
    ``movies`` (reading), ``lineage`` (``L B E P`` rows), ``atomic`` (write beside, swap in),
    ``results`` (CTC result and movie folders written), ``groundtruth`` (ground truth read,
    time windows). Everything public is importable from ``napari_cosine_tracker.core.io``.
"""

from __future__ import annotations

from .atomic import STALE_TMP_S, _guard_overwrite, _swap_in, atomic_file
from .groundtruth import (
    CTCGroundTruth,
    clip_lineage,
    read_ctc_gt,
    slice_ctc_gt,
    slice_ctc_sequence,
    slice_movie_folder,
)
from .lineage import (
    _labels_in,
    check_lineage,
    lineage_from_labels,
    read_lineage,
    write_lineage,
)
from .movies import (
    BIOIO_SUFFIXES,
    TIFF_SUFFIXES,
    Movie,
    MovieError,
    _is_bioio,
    as_movie,
    read_masks,
    read_movie,
)
from .results import (
    _RESULT_FILE,
    read_ctc_result,
    write_ctc_gt,
    write_ctc_result,
    write_movie_folder,
)

__all__ = [
    "MovieError",
    "Movie",
    "read_movie",
    "as_movie",
    "CTCGroundTruth",
    "read_ctc_gt",
    "read_lineage",
    "write_lineage",
    "check_lineage",
    "lineage_from_labels",
    "write_ctc_result",
    "read_ctc_result",
    "write_movie_folder",
    "write_ctc_gt",
    "slice_ctc_gt",
    "slice_movie_folder",
    "slice_ctc_sequence",
    "read_masks",
    "clip_lineage",
    "atomic_file",
    "TIFF_SUFFIXES",
    "BIOIO_SUFFIXES",
    # used by other modules of the package (export, batch, reader, tests)
    "STALE_TMP_S",
    "_swap_in",
    "_guard_overwrite",
    "_RESULT_FILE",
    "_labels_in",
    "_is_bioio",
]
