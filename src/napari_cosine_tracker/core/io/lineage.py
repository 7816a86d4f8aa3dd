"""Lineages: the CTC ``L B E P`` rows read, written, checked and derived from labels, and
the atomic file writer every text output uses."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .atomic import _clean_stale, atomic_file
from .movies import MovieError

# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


def read_lineage(path) -> np.ndarray:
    """Read a CTC track file (``man_track.txt`` / ``res_track.txt``: ``L B E P`` per line).

    Returns
    -------
    ndarray, int64, shape (N, 4)
        Rows ``id, first, last, parent``, in file order.

    Raises
    ------
    MovieError
        Missing file; a line that is not four non-negative integers or ends before it begins
        (the message gives line number and content); duplicate labels.
    """
    path = Path(path)
    if not path.is_file():
        raise MovieError(f"{path}: track file not found; a CTC folder needs it "
                         "(man_track.txt for ground truth, res_track.txt for results)")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split()
            try:
                vals = [int(p) for p in parts]
            except ValueError:
                vals = None
            if vals is None or len(vals) != 4:
                raise MovieError(f"{path}, line {n}: {text!r} is not 'L B E P' (four integers: "
                                 "label, first frame, last frame, parent); fix or remove it")
            if max(vals) > np.iinfo(np.int64).max:
                raise MovieError(f"{path}, line {n}: {text!r} has a number too large for a "
                                 "label or frame; fix or remove the line")
            if min(vals) < 0 or vals[0] == 0:
                raise MovieError(f"{path}, line {n}: {text!r} has a negative value or label 0; "
                                 "labels are positive, frames and parents >= 0")
            if vals[2] < vals[1]:
                raise MovieError(f"{path}, line {n}: {text!r}: track ends (E={vals[2]}) before "
                                 f"it begins (B={vals[1]})")
            rows.append(vals)
    lin = np.array(rows, np.int64).reshape(-1, 4)
    ids, counts = np.unique(lin[:, 0], return_counts=True)
    if (counts > 1).any():
        raise MovieError(f"{path}: label(s) {ids[counts > 1][:5].tolist()} appear on more "
                         "than one line; each track needs its own label")
    return lin


def write_lineage(path, lineage) -> Path:
    """Write a lineage as a CTC track file (``L B E P`` lines), atomically."""
    path = Path(path)
    lin = _as_lineage(lineage)
    text = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in lin.tolist())
    _clean_stale(path.parent, path.name)
    with atomic_file(path, "w") as f:
        f.write(text)
    return path


def _as_lineage(lineage) -> np.ndarray:
    lin = np.asarray(lineage if lineage is not None else np.zeros((0, 4)))
    if lin.size == 0:
        return np.zeros((0, 4), np.int64)
    if lin.ndim != 2 or lin.shape[1] != 4:
        raise MovieError(f"lineage must be an (N, 4) array of id, first, last, parent; got "
                         f"shape {lin.shape}")
    if lin.dtype.kind not in "ui" and not np.array_equal(lin, np.round(lin)):
        raise MovieError("lineage must hold integers (id, first, last, parent)")
    return lin.astype(np.int64)


def check_lineage(lineage, presence: Mapping[int, Sequence[int]] | None = None,
                  n_frames: int | None = None) -> list[str]:
    """List the problems of a lineage (empty list: valid for the CTC measures).

    Parameters
    ----------
    lineage : (N, 4) array
        Rows ``id, first, last, parent``.
    presence : mapping of frame -> labels present in that frame, optional
        If given, every label in a frame must have a row covering that frame, and every row
        must be present on all its frames ``first..last``.
    n_frames : int, optional
        Number of frames; rows must lie inside ``0..n_frames-1``.
    """
    lin = _as_lineage(lineage)
    problems: list[str] = []
    ids = lin[:, 0]
    uniq, counts = np.unique(ids, return_counts=True)
    for i in uniq[counts > 1][:10]:
        problems.append(f"label {i} has more than one row")
    if (lin < 0).any():
        problems.append("negative values in the lineage")
    if (ids == 0).any():
        problems.append("label 0 is background and cannot be a track")
    for i, b, e, p in lin.tolist():
        if e < b:
            problems.append(f"track {i} ends (frame {e}) before it begins (frame {b})")
        if n_frames is not None and (b < 0 or e >= n_frames):
            problems.append(f"track {i} spans frames {b}..{e}, outside 0..{n_frames - 1}")
    rows = {r[0]: r for r in lin.tolist()}
    for i, b, e, p in lin.tolist():
        if p == 0:
            continue
        if p == i:
            problems.append(f"track {i} is its own parent")
        elif p not in rows:
            problems.append(f"track {i} has parent {p}, which has no row")
        elif rows[p][2] >= b:
            problems.append(f"parent {p} ends at frame {rows[p][2]}, not before its daughter "
                            f"{i} begins (frame {b})")
    if presence is not None:
        span: dict[int, set] = {}
        for t, labs in presence.items():
            for lab in labs:
                span.setdefault(int(lab), set()).add(int(t))
        for lab, ts in sorted(span.items()):
            if lab not in rows:
                problems.append(f"label {lab} is in frame(s) {_fmt_frames(ts)} but has no "
                                "lineage row")
                continue
            _, b, e, _ = rows[lab]
            outside = sorted(t for t in ts if not b <= t <= e)
            if outside:
                problems.append(f"label {lab} is in frame(s) {_fmt_frames(outside)} outside its "
                                f"row's frames {b}..{e}")
        for i, b, e, _ in lin.tolist():
            ts = span.get(i, set())
            missing = [t for t in range(b, e + 1) if t not in ts]
            if missing:
                problems.append(f"track {i} (frames {b}..{e}) is missing from frame(s) "
                                f"{_fmt_frames(missing)}; tracks must be present on every "
                                "frame from first to last")
    return problems


def _fmt_frames(ts) -> str:
    ts = sorted(ts)
    return ", ".join(map(str, ts[:8])) + (f" ... ({len(ts)} frames)" if len(ts) > 8 else "")


def _labels_in(frame: np.ndarray) -> np.ndarray:
    """The ids in one frame, background excluded, sorted."""
    flat = np.asarray(frame).ravel()
    if flat.size and 0 <= int(flat.min()) and int(flat.max()) <= 4 * flat.size + 65536:
        ids = np.flatnonzero(np.bincount(flat.astype(np.intp, copy=False)))  # ~10x unique's sort
        return ids[ids != 0].astype(flat.dtype)
    u = np.unique(flat)
    return u[u != 0]


def _frames(labels) -> tuple[int, Iterable[np.ndarray]]:
    """(T, iterator over 2-D frames) for an array, Movie or sequence of frames."""
    if isinstance(labels, (str, os.PathLike)):
        raise MovieError(f"labels must be an array or a sequence of frames, not a path "
                         f"({labels}); read it with read_movie first")
    n = len(labels)
    return n, (np.asarray(labels[t]) for t in range(n))


def lineage_from_labels(labels, parents: Mapping[int, int] | None = None, *,
                        gaps: str = "raise") -> np.ndarray:
    """Derive the lineage ``id, first, last, parent`` of a tracked label stack.

    The one place a lineage is read off labels (export, layers and the editor use it).

    Parameters
    ----------
    labels : (T, Y, X) array, Movie, or sequence of 2-D frames
        Values are track ids (0 = background). Read one frame at a time.
    parents : mapping child id -> parent id, optional
        Division links; absent ids get parent 0.
    gaps : "raise" or "span"
        A label that vanishes and comes back breaks the CTC rules: "raise" refuses it (the
        default, for results to be written), "span" gives it one row from its first to its
        last frame (for :class:`~napari_cosine_tracker.core.edit.TrackEditor`, whose
        ``repair=True`` then splits it).

    Raises
    ------
    MovieError
        If a label vanishes and comes back (a CTC track must be present on every frame from
        its first to its last: give the part after the gap a new id, with the first part as
        parent if it is the same cell).
    """
    parents = dict(parents or {})
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    count: dict[int, int] = {}
    n, frames = _frames(labels)
    for t, frame in enumerate(frames):
        for lab in _labels_in(frame).tolist():
            first.setdefault(lab, t)
            last[lab] = t
            count[lab] = count.get(lab, 0) + 1
    if gaps not in ("raise", "span"):
        raise ValueError(f"gaps must be 'raise' or 'span', got {gaps!r}")
    broken = [lab for lab in first if count[lab] != last[lab] - first[lab] + 1]
    if broken and gaps == "raise":
        raise MovieError(
            f"label(s) {sorted(broken)[:10]} disappear and come back; a CTC track must be "
            "present on every frame from its first to its last: give the part after the gap a "
            "new label")
    unknown = sorted(c for c in parents if c not in first)
    if unknown:
        raise MovieError(f"parents given for label(s) {unknown[:10]} that are not in the labels")
    rows = [[lab, first[lab], last[lab], int(parents.get(lab, 0))] for lab in sorted(first)]
    return np.array(rows, np.int64).reshape(-1, 4)


