"""CTC result folders (``maskTTT.tif`` + ``res_track.txt``), movie folders and ground truth
written atomically: built in a temporary sibling, then swapped in."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tifffile

from .atomic import _guard_overwrite, _swap_in, _tmp_sibling
from .lineage import (
    _as_lineage,
    _frames,
    _labels_in,
    check_lineage,
    lineage_from_labels,
    read_lineage,
    write_lineage,
)
from .movies import Movie, MovieError, _read_folder, as_movie

# --------------------------------------------------------------------------------------------
# Atomic folder writing
# --------------------------------------------------------------------------------------------

_RESULT_FILE = re.compile(r"^(mask\d+\.tiff?|res_track\.txt)$")


def _frame_name(prefix: str, t: int, n_frames: int, digits: int | None = None) -> str:
    d = digits or (4 if n_frames > 1000 else 3)
    return f"{prefix}{t:0{d}d}.tif"


def _write_tif(path: Path, frame: np.ndarray):
    tifffile.imwrite(path, frame, compression="zlib")


def _as_uint16_labels(frame: np.ndarray, t: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise MovieError(f"labels frame {t} has shape {frame.shape}; each frame must be 2-D "
                         "(Y, X)")
    if frame.dtype.kind not in "ui":
        if frame.dtype.kind == "b" or not np.array_equal(frame, np.round(frame)):
            raise MovieError(f"labels frame {t} has pixel type {frame.dtype}; labels must be "
                             "integer track ids")
    if frame.size and (frame.min() < 0 or frame.max() > 65535):
        raise MovieError(f"labels frame {t} has values outside 0..65535; CTC masks are uint16: "
                         "relabel the tracks (e.g. skimage.segmentation.relabel_sequential)")
    return frame.astype(np.uint16, copy=False)


def write_ctc_result(out_dir, labels, lineage=None, *, parents=None, check: bool = True,
                     digits: int | None = None) -> Path:
    """Write a CTC result folder: ``maskTTT.tif`` (uint16) per frame and ``res_track.txt``.

    Frames are written into a temporary sibling folder which then replaces ``out_dir`` by
    renames, so an interrupted export leaves the previous result untouched.

    Parameters
    ----------
    out_dir : str or Path
        The result folder (e.g. ``.../01_RES``). An existing folder is replaced only if it
        holds nothing but masks and ``res_track.txt``.
    labels : (T, Y, X) array, Movie, or sequence of 2-D frames
        Tracked labels; frames are taken one at a time, so the stack need not be in memory.
    lineage : (N, 4) array, optional
        Rows ``id, first, last, parent``; derived with :func:`lineage_from_labels` (using
        ``parents``) if omitted.
    parents : mapping child -> parent, optional
        Division links, used only when ``lineage`` is omitted.
    check : bool
        Check the lineage against the labels (every label in a frame has a row covering that
        frame, rows are present on all their frames, parents end before daughters begin) and
        raise before replacing anything if it does not hold.
    digits : int, optional
        Digits of the frame number in file names (default 3, or 4 when T > 1000).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    MovieError
        Inconsistent lineage, non-integer or out-of-range labels, unsafe output folder.
    """
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, _RESULT_FILE, "CTC result folder (maskTTT.tif + res_track.txt)")
    n, frames = _frames(labels)
    if n == 0:
        raise MovieError("labels have no frames; nothing to write")
    tmp = _tmp_sibling(out_dir)
    try:
        presence: dict[int, np.ndarray] = {}
        for t, frame in enumerate(frames):
            frame = _as_uint16_labels(frame, t)
            _write_tif(tmp / _frame_name("mask", t, n, digits), frame)
            presence[t] = _labels_in(frame)
        if lineage is None:
            lin = _lineage_from_presence(presence, parents)
        else:
            lin = _as_lineage(lineage)
        if check:
            problems = check_lineage(lin, presence, n_frames=n)
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise MovieError(f"{out_dir}: labels and lineage disagree: "
                                 + "; ".join(problems[:5]) + more
                                 + ". Nothing was written; fix the lineage (lineage_from_labels "
                                   "derives one from the labels)")
        write_lineage(tmp / "res_track.txt", lin)
        _swap_in(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno is not None and not e.filename:  # e.g. a full disk: say where
            raise OSError(e.errno, e.strerror, str(out_dir)) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _lineage_from_presence(presence, parents):
    # Reuse lineage_from_labels' checks on the per-frame label sets already collected.
    n = len(presence)
    fake = [presence[t] for t in range(n)]
    return lineage_from_labels(_LabelSets(fake), parents)


class _LabelSets:
    """Frames given as label sets; ``np.unique`` of one is the set itself."""

    def __init__(self, sets):
        self._sets = sets

    def __len__(self):
        return len(self._sets)

    def __getitem__(self, t):
        return self._sets[t]


def read_ctc_result(res_dir) -> tuple[Movie, np.ndarray]:
    """Read a CTC result folder: (lazy ``maskTTT.tif`` movie, lineage from ``res_track.txt``)."""
    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        # A process killed between _swap_in's two renames leaves the previous result aside.
        left = sorted(res_dir.parent.glob(f".{res_dir.name}.old-*")) if res_dir.parent.is_dir() else []
        hint = (f"; an interrupted export left the previous result in {left[-1]}: rename it "
                f"to {res_dir.name} to use it" if left else "")
        raise MovieError(f"{res_dir}: result folder not found{hint}")
    lineage = read_lineage(res_dir / "res_track.txt")
    return _read_folder(res_dir, prefix="mask", min_frames=1), lineage


def write_movie_folder(out_dir, images, prefix: str = "t", digits: int | None = None) -> Path:
    """Write frames as ``tTTT.tif`` (CTC image folder), atomically; one frame at a time."""
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, re.compile(rf"^{re.escape(prefix)}\d+\.tiff?$"), "movie folder")
    movie = as_movie(images) if not isinstance(images, Movie) else images
    n = len(movie)
    tmp = _tmp_sibling(out_dir)
    try:
        for t in range(n):
            _write_tif(tmp / _frame_name(prefix, t, n, digits), np.asarray(movie[t]))
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


_GT_FILE = re.compile(r"^(SEG|TRA)$")


def write_ctc_gt(out_dir, labels, lineage=None, *, seg_frames: Iterable[int] | None = None,
                 seg_labels=None, parents=None) -> Path:
    """Write a CTC ground-truth folder (``SEG/``, ``TRA/`` and ``TRA/man_track.txt``), atomically.

    Parameters
    ----------
    labels : (T, Y, X) array, Movie or sequence of frames
        Tracked labels, written as the TRA masks (full masks are valid TRA markers).
    lineage : (N, 4) array, optional
        Derived from ``labels`` if omitted.
    seg_frames : iterable of int, optional
        Frames that get a ``SEG/man_segTTT.tif``; default all.
    seg_labels : (T, Y, X) array or sequence, optional
        Segmentation truth if it differs from ``labels``.
    """
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, _GT_FILE, "CTC ground-truth folder (SEG, TRA)")
    n, _ = _frames(labels)
    seg_set = set(range(n)) if seg_frames is None else {int(t) for t in seg_frames}
    seg_src = labels if seg_labels is None else seg_labels
    tmp = _tmp_sibling(out_dir)
    try:
        (tmp / "SEG").mkdir()
        (tmp / "TRA").mkdir()
        presence = {}
        for t in range(n):
            frame = _as_uint16_labels(labels[t], t)
            _write_tif(tmp / "TRA" / _frame_name("man_track", t, n), frame)
            presence[t] = _labels_in(frame)
            if t in seg_set:
                seg = _as_uint16_labels(seg_src[t], t)
                _write_tif(tmp / "SEG" / _frame_name("man_seg", t, n), seg)
        lin = (_lineage_from_presence(presence, parents) if lineage is None
               else _as_lineage(lineage))
        problems = check_lineage(lin, presence, n_frames=n)
        if problems:
            raise MovieError(f"{out_dir}: labels and lineage disagree: " + "; ".join(problems[:5]))
        write_lineage(tmp / "TRA" / "man_track.txt", lin)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


