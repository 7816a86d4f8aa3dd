"""Hand correction of tracking results: one model for labels + lineage, with undo/redo.

:class:`TrackEditor` owns a tracked label stack ``(T, Y, X)`` (pixel value == track id) and
its lineage (``int64 (N, 4)``: ``id, first, last, parent``) and keeps them consistent after
every edit, following the Cell Tracking Challenge (CTC) conventions:

* a track occupies every frame from ``first`` to ``last`` and no other frame;
* a parent ends before its children start (``parent.last < child.first``); a division has
  ``parent.last + 1 == child.first``, a larger distance is a CTC gap link.

Every edit is an :class:`Action` (command pattern). The first :meth:`Action.apply` runs the
edit inside a transaction and records a compact :class:`Diff` -- for each changed frame
only the bounding box of the changed pixels, before and after, plus the lineage rows that
changed. Undo and redo replay that diff, so they are exact and cost in proportion to the
edit, not to the movie. Edits that would break the CTC rules are repaired inside the same
action (a track that gets a hole is split, the later piece linked to the earlier as a gap
link; a parent link that became impossible is cleared), so undo also reverts the repair.

Several actions can be made one undo step (:meth:`TrackEditor.group`), and free pixel edits
(a napari brush or fill stroke, :meth:`TrackEditor.edit_pixels`) go through the same path.
Listeners (plain callables) receive an :class:`EditEvent` with the changed frames and track
ids after every do/undo/redo, so a viewer can refresh only what changed.

A project is a folder beside the movie: ``base-<uid>.npz`` holds the labels and lineage the
history starts from (written once), ``state.npz`` both history stacks as diffs plus a JSON
header (rewritten on every save, cheap). Both are read with ``allow_pickle=False``; each is
written to a temporary file in the folder and renamed over the old one, and the new base is
written before the state that names it, so a crash at any point leaves a loadable project.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "Action",
    "Candidate",
    "Diff",
    "EditEvent",
    "TrackEditor",
    "check_consistency",
    "default_project_path",
    "lineage_from_labels",
]

log = logging.getLogger(__name__)

PROJECT_FORMAT = "napari-cosine-tracker-project"
PROJECT_VERSION = 1
PROJECT_SUFFIX = ".tracks"
#: napari layer metadata key: the project folder a Labels layer was opened from
PROJECT_KEY = "project_path"


# --------------------------------------------------------------------------------------
# Consistency helpers
# --------------------------------------------------------------------------------------


def _as_lineage(lineage) -> np.ndarray:
    arr = np.asarray(lineage, dtype=np.int64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"lineage must have shape (N, 4) with columns id, first, last, parent; got {arr.shape}"
        )
    return arr


def _frame_counts(frame: np.ndarray) -> dict[int, int]:
    """``{id: pixel count}`` of one frame, background excluded."""
    flat = np.asarray(frame).ravel()
    top = int(flat.max()) if flat.size else 0
    if top <= 4 * flat.size + 65536:  # bincount is ~10x faster than unique's sort
        counts = np.bincount(flat.astype(np.intp, copy=False), minlength=1)
        ids = np.flatnonzero(counts)
        return {int(i): int(counts[i]) for i in ids if i != 0}
    ids, counts = np.unique(flat, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts) if i != 0}


def lineage_from_labels(labels: np.ndarray) -> np.ndarray:
    """Lineage rows (no parents) for every id of a label stack.

    Parameters
    ----------
    labels : (T, Y, X) integer array
        Tracked labels.

    Returns
    -------
    (N, 4) int64 array
        ``id, first, last, 0`` per id, ``first``/``last`` the first and last frame with it.
        Ids that skip frames are not split here; :class:`TrackEditor` with ``repair=True``
        does that.
    """
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in range(labels.shape[0]):
        for i in _frame_counts(np.asarray(labels[t])):
            first.setdefault(i, t)
            last[i] = t
    rows = [(i, first[i], last[i], 0) for i in sorted(first)]
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


def check_consistency(labels: np.ndarray, lineage: np.ndarray) -> list[str]:
    """List every way a label stack and a lineage break the CTC rules (empty: consistent).

    Checks that each id in the stack has a lineage row, that each row's id occupies exactly
    the frames ``first..last``, that ids are unique and positive, and that each parent exists
    and ends before its child starts.
    """
    present: dict[int, list[int]] = {}
    for t in range(labels.shape[0]):
        for i in _frame_counts(np.asarray(labels[t])):
            present.setdefault(i, []).append(t)
    return _problems(present, lineage)


def _problems(present: dict[int, list[int]], lineage) -> list[str]:
    problems: list[str] = []
    lin = _as_lineage(lineage)
    ids = lin[:, 0]
    if len(np.unique(ids)) != len(ids):
        problems.append("lineage has duplicate ids")
    if (ids <= 0).any():
        problems.append("lineage has ids <= 0")
    rows = {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in lin}
    for i, frames in present.items():
        if i not in rows:
            problems.append(f"label {i} (frames {frames[0]}..{frames[-1]}) has no lineage row")
            continue
        f, l, _ = rows[i]
        if frames != list(range(f, l + 1)):
            problems.append(f"track {i}: row says frames {f}..{l}, labels are in {frames}")
    for i, (f, l, p) in rows.items():
        if i not in present:
            problems.append(f"track {i}: lineage row {f}..{l} but no pixels")
        if f > l:
            problems.append(f"track {i}: first {f} > last {l}")
        if p != 0:
            if p not in rows:
                problems.append(f"track {i}: parent {p} has no lineage row")
            elif rows[p][1] >= f:
                problems.append(f"track {i}: parent {p} ends at {rows[p][1]}, child starts at {f}")
    return problems


def default_project_path(movie_path: str | os.PathLike) -> Path:
    """Project folder beside a movie: ``<movie>.tracks`` (``01/`` -> ``01.tracks/``)."""
    p = Path(movie_path)
    return p.parent / (p.name.rstrip("/") + PROJECT_SUFFIX)


def is_project(path) -> bool:
    """``path`` is a project folder saved by :meth:`TrackEditor.save` (``*.tracks``)."""
    return Path(path).is_dir() and (Path(path) / "state.npz").is_file()


#: Environment variable naming the folder for autosaves of movies without a file.
AUTOSAVE_ENV = "NAPARI_COSINE_TRACKER_AUTOSAVE"


def autosave_root() -> Path:
    """Per-user folder for the corrections of movies that have no file (an array made in
    Python, a layer from another plugin): ``$NAPARI_COSINE_TRACKER_AUTOSAVE``, else the
    platform's user data folder (``~/.local/share/napari-cosine-tracker/autosave`` on Linux)."""
    if os.environ.get(AUTOSAVE_ENV):
        return Path(os.environ[AUTOSAVE_ENV])
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-cosine-tracker")) / "autosave"


def data_fingerprint(data) -> str:
    """A short hash that recognises the same movie (or labels) when opened again: its
    shape, pixel type and the pixels of its first, middle and last frames."""
    import hashlib

    h = hashlib.sha256(f"{tuple(data.shape)} {np.dtype(data.dtype).str}".encode())
    n = int(data.shape[0])
    for t in sorted({0, n // 2, n - 1}):
        h.update(np.ascontiguousarray(np.asarray(data[t])).tobytes())
    return h.hexdigest()[:20]


def autosave_project_path(data) -> Path:
    """Where the corrections of a movie without a file are autosaved (see
    :func:`autosave_root`), keyed by :func:`data_fingerprint` of ``data``."""
    return autosave_root() / (data_fingerprint(data) + PROJECT_SUFFIX)


# --------------------------------------------------------------------------------------
# Diffs, events, candidates
# --------------------------------------------------------------------------------------

Row = tuple  # (first, last, parent)


@dataclass
class Patch:
    """Pixels of one frame inside a bounding box, before and after an edit."""

    t: int
    y0: int
    x0: int
    old: np.ndarray
    new: np.ndarray


@dataclass
class Diff:
    """The exact effect of an action: changed pixel boxes and changed lineage rows."""

    patches: list[Patch] = field(default_factory=list)
    # id -> (row before or None, row after or None); row = (first, last, parent)
    rows: dict[int, tuple[Row | None, Row | None]] = field(default_factory=dict)

    @property
    def frames(self) -> tuple[int, ...]:
        return tuple(sorted({p.t for p in self.patches}))

    @property
    def ids(self) -> tuple[int, ...]:
        ids = set(self.rows)
        for p in self.patches:
            ids.update(int(v) for v in np.unique(p.old))
            ids.update(int(v) for v in np.unique(p.new))
        ids.discard(0)
        return tuple(sorted(ids))

    @property
    def nbytes(self) -> int:
        return sum(p.old.nbytes + p.new.nbytes for p in self.patches)

    def apply(self, ed: TrackEditor) -> None:
        for p in self.patches:
            ed._write(p.t, p.y0, p.x0, p.new)
        for i, (_, new) in self.rows.items():
            ed._set_row(i, new)

    def revert(self, ed: TrackEditor) -> None:
        for p in reversed(self.patches):
            ed._write(p.t, p.y0, p.x0, p.old)
        for i, (old, _) in self.rows.items():
            ed._set_row(i, old)


@dataclass(frozen=True)
class EditEvent:
    """What changed: ``kind`` is ``"do"``, ``"undo"``, ``"redo"``, or ``"group"`` when an
    edit group ends (its frames and ids are those of the whole group)."""

    kind: str
    description: str
    frames: tuple[int, ...]
    ids: tuple[int, ...]


@dataclass(frozen=True)
class Candidate:
    """An event worth a second look: higher ``score`` means more doubt (0..1)."""

    frame: int
    track_id: int
    y: float
    x: float
    reason: str
    score: float


# --------------------------------------------------------------------------------------
# Transaction: applies changes at once, records what it needs to build a Diff or roll back
# --------------------------------------------------------------------------------------


class _Txn:
    def __init__(self, ed: TrackEditor):
        self.ed = ed
        self.patches: list[tuple[int, int, int, np.ndarray]] = []  # (t, y0, x0, old)
        self.rows_before: dict[int, Row | None] = {}
        self.touched: set[int] = set()

    # pixels -----------------------------------------------------------------------
    def set_region(self, t: int, y0: int, x0: int, new: np.ndarray) -> None:
        h, w = new.shape
        old = self.ed._labels[t, y0 : y0 + h, x0 : x0 + w].copy()
        changed = old != new
        if not changed.any():
            return
        self.patches.append((t, y0, x0, old))
        self.touched.update(int(v) for v in np.unique(old[changed]))
        self.touched.update(int(v) for v in np.unique(new[changed]))
        self.touched.discard(0)
        self.ed._write(t, y0, x0, new)

    def paint(self, t: int, sl: tuple[slice, slice], mask: np.ndarray, value: int) -> None:
        region = self.ed._labels[t][sl].copy()
        region[mask] = value
        self.set_region(t, sl[0].start, sl[1].start, region)

    def relabel(self, t: int, src: int, dst: int) -> None:
        self.remap(t, {src: dst})

    def remap(self, t: int, mapping: dict[int, int]) -> None:
        """Apply ``{old id: new id}`` to frame ``t`` at once (so swaps need no placeholder)."""
        srcs = [k for k in mapping if k in self.ed._counts[t]]
        if not srcs:
            return
        frame = self.ed._labels[t]
        m = frame == srcs[0]
        for k in srcs[1:]:
            m |= frame == k
        sl = _mask_bbox(m)
        region = frame[sl].copy()
        masks = [(region == k, mapping[k]) for k in srcs]
        for mk, v in masks:
            region[mk] = v
        self.set_region(t, sl[0].start, sl[1].start, region)

    # lineage ----------------------------------------------------------------------
    def set_row(self, i: int, row: Row | None) -> None:
        if i not in self.rows_before:
            self.rows_before[i] = self.ed._rows.get(i)
        self.touched.add(i)
        self.ed._set_row(i, row)

    def set_parent(self, i: int, parent: int) -> None:
        f, l, _ = self.ed._rows[i]
        self.set_row(i, (f, l, int(parent)))

    # consistency ------------------------------------------------------------------
    def normalize(self) -> None:
        """Make rows follow the pixels of every touched id (see module docstring)."""
        ed = self.ed
        done: set[int] = set()
        while self.touched - done:
            i = min(self.touched - done)
            done.add(i)
            frames = sorted(ed._frames_of.get(i, ()))
            row = ed._rows.get(i)
            children = ed._children(i)
            if not frames:
                if row is not None:
                    for c in children:
                        self.set_parent(c, 0)
                    self.set_row(i, None)
                continue
            runs: list[list[int]] = [[frames[0]]]
            for t in frames[1:]:
                if t == runs[-1][-1] + 1:
                    runs[-1].append(t)
                else:
                    runs.append([t])
            parent = row[2] if row is not None else 0
            keep = 0
            if row is not None:
                keep = next((k for k, r in enumerate(runs) if row[0] in r), 0)
            run_ids = [i if k == keep else ed._new_id() for k in range(len(runs))]
            for k, run in enumerate(runs):
                if run_ids[k] != i:
                    for t in run:
                        self.relabel(t, i, run_ids[k])
            for k, run in enumerate(runs):
                p = parent if k == 0 else run_ids[k - 1]
                self.set_row(run_ids[k], (run[0], run[-1], p))
            done.update(run_ids)
            for c in children:
                self.set_parent(c, run_ids[-1])
        # A parent must end before its child starts; clear links that no longer can.
        check = set(self.touched)
        for i in list(self.touched):
            check.update(ed._children(i))
        for i in sorted(check):
            row = ed._rows.get(i)
            if row is None or row[2] == 0:
                continue
            prow = ed._rows.get(row[2])
            if prow is None or prow[1] >= row[0]:
                self.set_parent(i, 0)

    # finishing --------------------------------------------------------------------
    def diff(self) -> Diff:
        """Merge the recorded writes into one box per frame, cropped to changed pixels."""
        lab = self.ed._labels
        by_t: dict[int, list[tuple[int, int, np.ndarray]]] = {}
        for t, y0, x0, old in self.patches:
            by_t.setdefault(t, []).append((y0, x0, old))
        patches: list[Patch] = []
        for t in sorted(by_t):
            items = by_t[t]
            Y0 = min(y0 for y0, _, _ in items)
            X0 = min(x0 for _, x0, _ in items)
            Y1 = max(y0 + o.shape[0] for y0, _, o in items)
            X1 = max(x0 + o.shape[1] for _, x0, o in items)
            new = lab[t, Y0:Y1, X0:X1].copy()
            old = new.copy()
            for y0, x0, o in reversed(items):
                old[y0 - Y0 : y0 - Y0 + o.shape[0], x0 - X0 : x0 - X0 + o.shape[1]] = o
            changed = old != new
            if not changed.any():
                continue
            ys, xs = np.nonzero(changed)
            sy = slice(int(ys.min()), int(ys.max()) + 1)
            sx = slice(int(xs.min()), int(xs.max()) + 1)
            patches.append(
                Patch(t, Y0 + sy.start, X0 + sx.start, old[sy, sx].copy(), new[sy, sx].copy())
            )
        rows = {
            i: (before, self.ed._rows.get(i))
            for i, before in self.rows_before.items()
            if before != self.ed._rows.get(i)
        }
        return Diff(patches, rows)

    def rollback(self) -> None:
        for t, y0, x0, old in reversed(self.patches):
            self.ed._write(t, y0, x0, old)
        for i, before in self.rows_before.items():
            self.ed._set_row(i, before)


# --------------------------------------------------------------------------------------
# Actions
# --------------------------------------------------------------------------------------

_REGISTRY: dict[str, type[Action]] = {}


class Action:
    """One undoable edit. ``params`` (JSON) say what to do; the :class:`Diff` what it did.

    The first :meth:`apply` plans the edit against the editor's current state; later
    applies (redo) and :meth:`revert` (undo) replay the recorded diff.
    """

    kind = "action"

    def __init__(self, **params: Any):
        self.params: dict[str, Any] = params
        self.result: Any = None
        self.diff: Diff | None = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        _REGISTRY[cls.kind] = cls

    @property
    def description(self) -> str:
        return self.kind

    def _run(self, ed: TrackEditor, txn: _Txn) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def apply(self, ed: TrackEditor) -> None:
        if self.diff is not None:
            self.diff.apply(ed)
            return
        txn = _Txn(ed)
        try:
            self.result = self._run(ed, txn)
            txn.normalize()
        except BaseException:
            txn.rollback()
            raise
        self.diff = txn.diff()

    def revert(self, ed: TrackEditor) -> None:
        if self.diff is None:
            raise RuntimeError(f"{self.description}: cannot revert an action that was never applied")
        self.diff.revert(ed)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}>"


def _need_cell(ed: TrackEditor, t: int, i: int) -> tuple[slice, slice]:
    ed._check_frame(t)
    sl = ed._bbox(t, i)
    if sl is None:
        raise ValueError(f"track {i} has no cell in frame {t}")
    return sl


def _need_track(ed: TrackEditor, i: int) -> Row:
    row = ed._rows.get(int(i))
    if row is None:
        raise ValueError(f"track {i} does not exist")
    return row


def _mask_bbox(m: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of a 2-D bool mask (any() per axis: far faster than nonzero())."""
    rows = np.flatnonzero(m.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(m[rows[0] : rows[-1] + 1].any(0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _pad(sl: tuple[slice, slice], pad: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    return tuple(
        slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(sl, shape)
    )  # type: ignore[return-value]


def _union(a: tuple[slice, slice] | None, b: tuple[slice, slice] | None):
    if a is None:
        return b
    if b is None:
        return a
    return tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(a, b))


class DeleteCell(Action):
    kind = "delete_cell"

    @property
    def description(self):
        return f"Delete cell {self.params['track_id']} in frame {self.params['t']}"

    def _run(self, ed, txn):
        t, i = self.params["t"], self.params["track_id"]
        sl = _need_cell(ed, t, i)
        txn.paint(t, sl, ed._labels[t][sl] == i, 0)


class PaintCell(Action):
    """Paint ``mask`` with a track id (new when None); ``replace`` drops its old pixels."""

    kind = "paint_cell"

    def __init__(self, mask: np.ndarray | None = None, **params):
        super().__init__(**params)
        self._mask = mask

    @property
    def description(self):
        i = self.result if self.result is not None else self.params.get("track_id")
        verb = "Repaint" if self.params.get("replace") else "Paint"
        return f"{verb} cell {i} in frame {self.params['t']}"

    def _run(self, ed, txn):
        t = self.params["t"]
        ed._check_frame(t)
        mask = np.asarray(self._mask, dtype=bool)
        if mask.shape != ed.shape[1:]:
            raise ValueError(f"mask must have the frame shape {ed.shape[1:]}, got {mask.shape}")
        if not mask.any():
            raise ValueError("mask is empty: nothing to paint")
        i = self.params.get("track_id")
        i = ed._new_id() if i is None else ed._check_id(i)
        sl = ndi.find_objects(mask.astype(np.uint8))[0]
        if self.params.get("replace", True):
            sl = _union(sl, ed._bbox(t, i))
        region = ed._labels[t][sl].copy()
        m = mask[sl]
        if self.params.get("replace", True):
            region[region == i] = 0
        if not self.params.get("overwrite", True):
            m = m & ((region == 0) | (region == i))
        if not m.any():
            raise ValueError(f"frame {t}: every pixel of the mask belongs to other cells")
        region[m] = i
        txn.set_region(t, sl[0].start, sl[1].start, region)
        return int(i)


class MergeCells(Action):
    kind = "merge_cells"

    @property
    def description(self):
        p = self.params
        return f"Merge cell {p['drop_id']} into {p['keep_id']} in frame {p['t']}"

    def _run(self, ed, txn):
        t, a, b = self.params["t"], self.params["keep_id"], self.params["drop_id"]
        if a == b:
            raise ValueError(f"cannot merge track {a} with itself")
        sl = _pad(_union(_need_cell(ed, t, a), _need_cell(ed, t, b)), 2, ed.shape[1:])
        region = ed._labels[t][sl].copy()
        union = (region == a) | (region == b)
        # Close the one- or two-pixel seam between touching cells, on background only.
        closed = ndi.binary_closing(union, structure=np.ones((3, 3), bool), iterations=1)
        region[union | (closed & (region == 0))] = a
        txn.set_region(t, sl[0].start, sl[1].start, region)


def _split_by_line(mask: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Two-part label image of ``mask`` cut by a polyline (bbox coordinates)."""
    from skimage.draw import line as draw_line

    pts = np.asarray(line, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) < 2:
        raise ValueError(f"line must be a polyline of at least two (y, x) points, got shape {pts.shape}")
    # Extend the end segments past the cell so that a line drawn roughly to its edge cuts it.
    reach = float(sum(mask.shape))
    pts = pts.copy()
    for end, nxt in ((0, 1), (-1, -2)):
        d = pts[end] - pts[nxt]
        n = np.hypot(*d)
        if n > 0:
            pts[end] = pts[end] + d / n * reach
    cut = np.zeros_like(mask)
    H, W = mask.shape
    for (y0, x0), (y1, x1) in zip(pts[:-1], pts[1:]):
        rr, cc = draw_line(int(round(y0)), int(round(x0)), int(round(y1)), int(round(x1)))
        ok = (rr >= 0) & (rr < H) & (cc >= 0) & (cc < W)
        cut[rr[ok], cc[ok]] = True
    # 4-connectivity: an 8-connected raster line separates 4-connected pieces.
    comp, n = ndi.label(mask & ~cut)
    if n < 2:
        raise ValueError("the line does not cut the cell into two pieces")
    sizes = np.bincount(comp.ravel())[1:]
    a, b = (np.argsort(sizes)[::-1][:2] + 1).tolist()
    return _assign_to_markers(mask, comp, a, b)


def _assign_to_markers(mask, comp, a, b) -> np.ndarray:
    """1/2 where comp == a/b, every other mask pixel to the nearer of the two."""
    markers = np.zeros(mask.shape, np.uint8)
    markers[comp == a] = 1
    markers[comp == b] = 2
    _, (iy, ix) = ndi.distance_transform_edt(markers == 0, return_indices=True)
    out = markers[iy, ix]
    out[~mask] = 0
    return out


def _split_kmeans(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    pts = np.stack([ys, xs], 1).astype(float)
    if len(pts) < 2:
        raise ValueError("a cell of one pixel cannot be split")
    c = pts.mean(0)
    # Deterministic start: the two extreme points along the principal axis.
    _, _, vt = np.linalg.svd(pts - c, full_matrices=False)
    proj = (pts - c) @ vt[0]
    centers = np.stack([pts[proj.argmin()], pts[proj.argmax()]])
    lab = np.zeros(len(pts), int)
    for _ in range(50):
        d = ((pts[:, None, :] - centers[None]) ** 2).sum(-1)
        new = d.argmin(1)
        if (new == lab).all() and _ > 0:
            break
        lab = new
        for k in range(2):
            if (lab == k).any():
                centers[k] = pts[lab == k].mean(0)
    if (lab == 0).all() or (lab == 1).all():
        raise ValueError("k-means found one cluster only; draw a line instead")
    out = np.zeros(mask.shape, np.uint8)
    out[ys, xs] = lab + 1
    return out


def _split_watershed(mask: np.ndarray) -> np.ndarray:
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    padded = np.pad(mask, 1)
    dist = ndi.distance_transform_edt(padded)
    # Peaks at least half the largest radius apart: the flat ridge of an elongated cell
    # must not give both seeds.
    peaks = peak_local_max(dist, min_distance=max(2, int(0.5 * dist.max())), num_peaks=2,
                           labels=padded.astype(np.uint8), exclude_border=False)
    if len(peaks) < 2:
        return _split_kmeans(mask)
    markers = np.zeros(padded.shape, np.int32)
    markers[tuple(peaks[0])] = 1
    markers[tuple(peaks[1])] = 2
    out = watershed(-dist, markers, mask=padded)[1:-1, 1:-1].astype(np.uint8)
    if not ((out == 1).any() and (out == 2).any()):
        return _split_kmeans(mask)
    return out


class SplitCell(Action):
    """Split a cell by a polyline or by re-clustering its pixels ("watershed"/"kmeans")."""

    kind = "split_cell"

    @property
    def description(self):
        p = self.params
        how = "a line" if p.get("line") is not None else p.get("method", "watershed")
        new = f" (new part {self.result})" if self.result is not None else ""
        return f"Split cell {p['track_id']} in frame {p['t']} by {how}{new}"

    def _run(self, ed, txn):
        p = self.params
        t, i = p["t"], p["track_id"]
        sl = _pad(_need_cell(ed, t, i), 1, ed.shape[1:])
        region = ed._labels[t][sl].copy()
        mask = region == i
        comp, n_comp = ndi.label(mask)
        if p.get("line") is not None:
            line = np.asarray(p["line"], float) - [sl[0].start, sl[1].start]
            parts = _split_by_line(mask, line)
        elif n_comp >= 2:  # a cell in pieces splits along them
            sizes = np.bincount(comp.ravel())[1:]
            a, b = (np.argsort(sizes)[::-1][:2] + 1).tolist()
            parts = _assign_to_markers(mask, comp, a, b)
        elif p.get("method", "watershed") == "watershed":
            parts = _split_watershed(mask)
        elif p["method"] == "kmeans":
            parts = _split_kmeans(mask)
        else:
            raise ValueError(f"method must be 'watershed' or 'kmeans', got {p['method']!r}")
        # The part that overlaps the cell's previous frame more keeps the identity.
        keep = 1 if (parts == 1).sum() >= (parts == 2).sum() else 2
        if t > 0 and i in ed._counts[t - 1]:
            prev = ed._labels[t - 1][sl] == i
            o1, o2 = (prev & (parts == 1)).sum(), (prev & (parts == 2)).sum()
            if o1 != o2:
                keep = 1 if o1 > o2 else 2
        new_id = p.get("new_id")
        if new_id is None:
            new_id = ed._new_id()
        else:
            new_id = ed._check_id(new_id)
            if new_id == i or new_id in ed._counts[t]:
                raise ValueError(f"track {new_id} already has a cell in frame {t}; pick another id")
        region[parts == (3 - keep)] = new_id
        txn.set_region(t, sl[0].start, sl[1].start, region)
        return int(new_id)


class ReassignTrack(Action):
    """From frame ``t`` on, track ``track_id`` becomes ``new_id`` (a new track when None)."""

    kind = "reassign_track"

    @property
    def description(self):
        p = self.params
        dst = self.result if self.result is not None else p.get("new_id")
        if p.get("cut"):
            return f"Cut track {p['track_id']} at frame {p['t']} (tail is track {dst})"
        return f"Reassign track {p['track_id']} from frame {p['t']} on to track {dst}"

    def _run(self, ed, txn):
        p = self.params
        t, i = p["t"], p["track_id"]
        f, l, _ = _need_track(ed, i)
        ed._check_frame(t)
        if p.get("cut") and not f < t <= l:
            raise ValueError(f"track {i} spans frames {f}..{l}: cut frame must be in {f + 1}..{l}")
        tail = [s for s in range(max(t, f), l + 1)]
        if not tail:
            raise ValueError(f"track {i} ends at frame {l}, before frame {t}")
        new_id = p.get("new_id")
        if new_id is None:
            new_id = ed._new_id()
        else:
            new_id = ed._check_id(new_id)
            if new_id == i:
                raise ValueError(f"track {i} cannot be reassigned to itself")
            clash = [s for s in tail if new_id in ed._counts[s]]
            if clash:
                raise ValueError(
                    f"track {new_id} already has cells in frames {clash[:5]}; use swap_tracks"
                )
        children = ed._children(i)
        for s in tail:
            txn.relabel(s, i, new_id)
        if new_id not in ed._rows:  # an existing target's rows are fixed by normalize()
            txn.set_row(new_id, (tail[0], tail[-1], 0))
        for c in children:  # daughters follow the cell, which is now the tail
            txn.set_parent(c, new_id)
        return int(new_id)


class SwapTracks(Action):
    kind = "swap_tracks"

    @property
    def description(self):
        p = self.params
        return f"Swap tracks {p['a']} and {p['b']} from frame {p['t']} on"

    def _run(self, ed, txn):
        t, a, b = self.params["t"], self.params["a"], self.params["b"]
        ed._check_frame(t)
        ra, rb = _need_track(ed, a), _need_track(ed, b)
        if a == b:
            raise ValueError(f"cannot swap track {a} with itself")
        if ra[1] < t and rb[1] < t:
            raise ValueError(f"tracks {a} and {b} both end before frame {t}")
        ca = ed._children(a) if ra[1] >= t else []
        cb = ed._children(b) if rb[1] >= t else []
        for s in range(t, max(ra[1], rb[1]) + 1):
            txn.remap(s, {a: b, b: a})
        for c in ca:
            txn.set_parent(c, b)
        for c in cb:
            txn.set_parent(c, a)


class LinkTracks(Action):
    """Join track ``b`` to the end of track ``a`` (a gap link when they are not adjacent)."""

    kind = "link_tracks"

    @property
    def description(self):
        p = self.params
        return f"Link track {p['b']} to the end of track {p['a']}"

    def _run(self, ed, txn):
        a, b = self.params["a"], self.params["b"]
        ra, rb = _need_track(ed, a), _need_track(ed, b)
        if a == b:
            raise ValueError(f"cannot link track {a} to itself")
        if ra[1] >= rb[0]:
            raise ValueError(
                f"track {a} ends at frame {ra[1]}, track {b} starts at {rb[0]}: "
                f"the first track must end before the second starts"
            )
        if rb[0] == ra[1] + 1:
            # Same cell: b's pixels become a; a's old daughters lose their parent.
            children = ed._children(b)
            for c in ed._children(a):
                txn.set_parent(c, 0)
            for s in range(rb[0], rb[1] + 1):
                txn.relabel(s, b, a)
            for c in children:
                txn.set_parent(c, a)
        else:
            txn.set_parent(b, a)


class SetParent(Action):
    """Mark a division (or a gap link): ``parent`` becomes the parent of ``child``."""

    kind = "set_parent"

    @property
    def description(self):
        p = self.params
        if p["parent"] == 0:
            return f"Clear the parent of track {p['child']}"
        return f"Make track {p['parent']} the parent of track {p['child']}"

    def _run(self, ed, txn):
        c, p = self.params["child"], self.params["parent"]
        rc = _need_track(ed, c)
        if p == 0:
            if rc[2] == 0:
                raise ValueError(f"track {c} has no parent")
        else:
            rp = _need_track(ed, p)
            if rp[1] >= rc[0]:
                raise ValueError(
                    f"parent {p} ends at frame {rp[1]} but track {c} starts at {rc[0]}: "
                    f"a parent must end before its daughter starts (cut the parent first)"
                )
        txn.set_parent(c, p)


class EditPixels(Action):
    """Set pixels ``(ys, xs)`` of frame ``t`` to ``values`` (e.g. a napari brush stroke)."""

    kind = "edit_pixels"

    def __init__(self, ys=None, xs=None, values=None, **params):
        super().__init__(**params)
        self._data = (ys, xs, values)

    @property
    def description(self):
        return self.params.get("label") or f"Edit {self.params['n']} pixels in frame {self.params['t']}"

    def _run(self, ed, txn):
        t = self.params["t"]
        ed._check_frame(t)
        ys, xs, values = self._data
        ys, xs = np.asarray(ys, np.intp).ravel(), np.asarray(xs, np.intp).ravel()
        vals = np.broadcast_to(np.asarray(values), ys.shape)
        if ys.shape != xs.shape or not len(ys):
            raise ValueError("ys and xs must be non-empty and of equal length")
        H, W = ed.shape[1:]
        if ys.min() < 0 or xs.min() < 0 or ys.max() >= H or xs.max() >= W:
            raise ValueError(f"pixel coordinates outside the frame {H} x {W}")
        if vals.size and (vals.min() < 0 or vals.max() > np.iinfo(ed._labels.dtype).max):
            raise ValueError(f"values must be track ids in 0..{np.iinfo(ed._labels.dtype).max}")
        for v in np.unique(vals):
            if v:
                ed._check_id(int(v))
        y0, x0 = int(ys.min()), int(xs.min())
        region = ed._labels[t, y0 : ys.max() + 1, x0 : xs.max() + 1].copy()
        region[ys - y0, xs - x0] = vals
        txn.set_region(t, y0, x0, region)


def _compose(diffs: list[Diff]) -> Diff:
    """One diff with the effect of ``diffs`` applied in order."""
    out = Diff()
    for d in diffs:
        out.patches.extend(d.patches)
        for i, (old, new) in d.rows.items():
            out.rows[i] = (out.rows[i][0] if i in out.rows else old, new)
    out.rows = {i: on for i, on in out.rows.items() if on[0] != on[1]}
    return out


class GroupAction(Action):
    """Several actions undone and redone as one (see :meth:`TrackEditor.group`)."""

    kind = "group"

    @property
    def description(self):
        return self.params["label"]


class DeleteTrack(Action):
    kind = "delete_track"

    @property
    def description(self):
        return f"Delete track {self.params['track_id']}"

    def _run(self, ed, txn):
        i = self.params["track_id"]
        f, l, _ = _need_track(ed, i)
        for s in range(f, l + 1):
            txn.relabel(s, i, 0)


# --------------------------------------------------------------------------------------
# Editor
# --------------------------------------------------------------------------------------


class TrackEditor:
    """Tracked labels and lineage kept consistent under undoable edits.

    Parameters
    ----------
    labels : (T, Y, X) integer array
        Tracked labels; pixel value = track id, 0 = background.
    lineage : (N, 4) int array, optional
        ``id, first, last, parent`` rows. Derived from ``labels`` (no parents) when omitted.
    copy : bool
        Work on a copy of ``labels`` (default). With ``False`` the array is edited in place.
    repair : bool
        Make an inconsistent input consistent (split ids that skip frames, add missing rows,
        drop empty rows and impossible parents) instead of raising. Not undoable.
    meta : dict, optional
        Free JSON-serialisable metadata saved with the project (e.g. the movie path).
    """

    def __init__(self, labels, lineage=None, *, copy: bool = True, repair: bool = False,
                 meta: dict | None = None):
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise ValueError(f"labels must be (T, Y, X), got shape {labels.shape}")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError("labels must be >= 0 (0 = background)")
        self._labels = labels.copy() if copy else labels
        if not self._labels.flags.writeable:
            raise ValueError("labels are read-only; pass copy=True")
        lin = lineage_from_labels(self._labels) if lineage is None else _as_lineage(lineage)
        self._rows: dict[int, Row] = {}
        for i, f, l, p in lin.tolist():
            if i in self._rows:
                raise ValueError(f"lineage: id {i} appears twice")
            self._rows[int(i)] = (int(f), int(l), int(p))
        self._counts: list[dict[int, int]] = [_frame_counts(self._labels[t]) for t in range(len(self._labels))]
        self._frames_of: dict[int, set[int]] = {}
        for t, cnt in enumerate(self._counts):
            for i in cnt:
                self._frames_of.setdefault(i, set()).add(t)
        ids = list(self._rows) + list(self._frames_of)
        self._next_id = max(ids, default=0) + 1
        self._undo: list[Action] = []
        self._redo: list[Action] = []
        self._listeners: list[Callable[[EditEvent], Any]] = []
        self._lineage_cache: np.ndarray | None = None
        self.meta: dict = dict(meta or {})
        self.project_path: Path | None = None
        self._base_uid: str | None = None  # names the saved labels the history starts from
        self._group: list[Action] | None = None
        self._centroids: dict[int, dict[int, tuple[float, float]]] = {}  # per frame, lazy
        problems = _problems({i: sorted(f) for i, f in self._frames_of.items()}, self.lineage)
        if problems:
            if not repair:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise ValueError(
                    "labels and lineage are inconsistent: " + "; ".join(problems[:5]) + more
                    + ". Pass repair=True to fix them automatically."
                )
            txn = _Txn(self)
            txn.touched.update(self._rows)
            txn.touched.update(self._frames_of)
            txn.normalize()

    # ---- state ---------------------------------------------------------------------
    @property
    def labels(self) -> np.ndarray:
        """Read-only view of the label stack; edit it through the editor's methods."""
        v = self._labels.view()
        v.flags.writeable = False
        return v

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(T, Y, X)``."""
        return tuple(self._labels.shape)  # type: ignore[return-value]

    @property
    def lineage(self) -> np.ndarray:
        """``int64 (N, 4)``: ``id, first, last, parent``, sorted by id (a fresh copy)."""
        if self._lineage_cache is None:
            rows = [(i, *r) for i, r in sorted(self._rows.items())]
            self._lineage_cache = np.array(rows, dtype=np.int64).reshape(-1, 4)
        return self._lineage_cache.copy()

    @property
    def graph(self) -> dict[int, list[int]]:
        """napari Tracks ``graph``: ``{child: [parent]}``."""
        return {i: [r[2]] for i, r in sorted(self._rows.items()) if r[2]}

    def track(self, track_id: int) -> tuple[int, int, int]:
        """``(first, last, parent)`` of a track."""
        return _need_track(self, track_id)

    def track_at(self, t: int, y: int, x: int) -> int:
        """Track id under pixel ``(y, x)`` of frame ``t`` (0: background)."""
        self._check_frame(t)
        return int(self._labels[t, y, x])

    def area(self, t: int, track_id: int) -> int:
        """Pixel count of a track's cell in frame ``t`` (0 when absent)."""
        return self._counts[t].get(int(track_id), 0)

    def ids_in_frame(self, t: int) -> list[int]:
        """Track ids with a cell in frame ``t``."""
        self._check_frame(t)
        return sorted(self._counts[t])

    def centroids(self, t: int) -> dict[int, tuple[float, float]]:
        """``{track id: (y, x)}`` of frame ``t`` (cached until the frame changes)."""
        self._check_frame(t)
        if t not in self._centroids:
            frame = self._labels[t]
            ids = sorted(self._counts[t])
            if ids:
                com = ndi.center_of_mass(np.ones(frame.shape, np.uint8), frame, ids)
                self._centroids[t] = {i: (float(y), float(x)) for i, (y, x) in zip(ids, com)}
            else:
                self._centroids[t] = {}
        return self._centroids[t]

    def tracks_data(self) -> tuple[np.ndarray, dict[int, list[int]]]:
        """napari Tracks layer ``data`` ``(M, 4)``: ``track_id, t, y, x`` and its ``graph``.

        Frames are measured once and re-measured only after they change.
        """
        rows = [(i, t, y, x) for t in range(self.shape[0]) for i, (y, x) in self.centroids(t).items()]
        data = np.array(rows, dtype=float).reshape(-1, 4)
        if len(data):
            data = data[np.lexsort((data[:, 1], data[:, 0]))]
        return data, self.graph

    def check(self) -> list[str]:
        """Full (slow) consistency check of the current state; empty when consistent."""
        return check_consistency(self._labels, self.lineage)

    # ---- low-level writes (used by actions and diffs) --------------------------------
    def _write(self, t: int, y0: int, x0: int, new: np.ndarray) -> None:
        h, w = new.shape
        view = self._labels[t, y0 : y0 + h, x0 : x0 + w]
        changed = view != new
        if not changed.any():
            return
        self._centroids.pop(t, None)
        cnt = self._counts[t]
        for v, c in zip(*np.unique(view[changed], return_counts=True)):
            v = int(v)
            if v == 0:
                continue
            left = cnt[v] - int(c)
            if left:
                cnt[v] = left
            else:
                del cnt[v]
                self._frames_of[v].discard(t)
                if not self._frames_of[v]:
                    del self._frames_of[v]
        for v, c in zip(*np.unique(new[changed], return_counts=True)):
            v = int(v)
            if v == 0:
                continue
            if v not in cnt:
                self._frames_of.setdefault(v, set()).add(t)
            cnt[v] = cnt.get(v, 0) + int(c)
        view[changed] = new[changed]

    def _set_row(self, i: int, row: Row | None) -> None:
        self._lineage_cache = None
        if row is None:
            self._rows.pop(i, None)
        else:
            self._rows[i] = tuple(int(v) for v in row)

    def _children(self, i: int) -> list[int]:
        return [c for c, r in self._rows.items() if r[2] == i]

    def _bbox(self, t: int, i: int) -> tuple[slice, slice] | None:
        if i not in self._counts[t]:
            return None
        return _mask_bbox(self._labels[t] == i)

    def _at_edge(self, t: int, i: int) -> bool:
        sl = self._bbox(t, i)
        return sl is not None and (sl[0].start == 0 or sl[1].start == 0 or
                                   sl[0].stop == self.shape[1] or sl[1].stop == self.shape[2])

    def _new_id(self) -> int:
        i = self._next_id
        if i > np.iinfo(self._labels.dtype).max:
            raise ValueError(
                f"no free track id below {np.iinfo(self._labels.dtype).max} for labels of dtype "
                f"{self._labels.dtype}; load the labels as int32"
            )
        self._next_id += 1
        return i

    def _check_id(self, i) -> int:
        i = int(i)
        if i <= 0 or i > np.iinfo(self._labels.dtype).max:
            raise ValueError(f"track id must be in 1..{np.iinfo(self._labels.dtype).max}, got {i}")
        self._next_id = max(self._next_id, i + 1)
        return i

    def _check_frame(self, t: int) -> None:
        if not 0 <= int(t) < self.shape[0]:
            raise ValueError(f"frame {t} is outside the movie (0..{self.shape[0] - 1})")

    # ---- history ---------------------------------------------------------------------
    def do(self, action: Action) -> Any:
        """Apply a new action, push it on the undo stack (clearing redo) and notify."""
        action.apply(self)
        if self._group is not None:
            self._group.append(action)
        else:
            self._undo.append(action)
            self._redo.clear()
        self._emit("do", action)
        return action.result

    def _not_in_group(self, what: str) -> None:
        if self._group is not None:
            raise RuntimeError(f"cannot {what} inside an edit group; finish the group first")

    @contextmanager
    def group(self, label: str):
        """Make every action inside the ``with`` block one undo step called ``label``.

        If the block raises, the actions done in it are reverted and the error re-raised.
        Groups do not nest.
        """
        if self._group is not None:
            raise RuntimeError("edit groups do not nest")
        self._group = done = []
        try:
            yield self
        except BaseException:
            self._group = None
            for a in reversed(done):
                a.revert(self)
                self._emit("undo", a)
            raise
        self._group = None
        if done:
            g = GroupAction(label=str(label), actions=[a.description for a in done])
            g.diff = _compose([a.diff for a in done])
            g.result = [a.result for a in done]
            self._undo.append(g)
            self._redo.clear()
            # Views skip the events inside a group (see in_group) and redraw once here.
            self._emit("group", g)

    @property
    def in_group(self) -> bool:
        """An edit group is open: its actions' events come before a final ``"group"`` one."""
        return self._group is not None

    def undo(self) -> bool:
        """Revert the last action; False when there is nothing to undo."""
        self._not_in_group("undo")
        if not self._undo:
            return False
        action = self._undo.pop()
        action.revert(self)
        self._redo.append(action)
        self._emit("undo", action)
        return True

    def redo(self) -> bool:
        """Re-apply the last undone action; False when there is nothing to redo."""
        self._not_in_group("redo")
        if not self._redo:
            return False
        action = self._redo.pop()
        action.apply(self)
        self._undo.append(action)
        self._emit("redo", action)
        return True

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has something to revert."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """Whether :meth:`redo` has something to re-apply."""
        return bool(self._redo)

    @property
    def history(self) -> list[str]:
        """Descriptions of the applied actions, oldest first."""
        return [a.description for a in self._undo]

    @property
    def redo_history(self) -> list[str]:
        """Descriptions of the undone actions, next redo first."""
        return [a.description for a in reversed(self._redo)]

    # ---- events ----------------------------------------------------------------------
    @property
    def listeners(self) -> list[Callable[[EditEvent], Any]]:
        """Callables called with an :class:`EditEvent` after every do/undo/redo."""
        return self._listeners

    def connect(self, fn: Callable[[EditEvent], Any]) -> Callable[[EditEvent], Any]:
        """Call ``fn(event)`` after every change; returns ``fn`` (usable as a decorator)."""
        self._listeners.append(fn)
        return fn

    def disconnect(self, fn: Callable[[EditEvent], Any]) -> None:
        """Stop calling ``fn``."""
        if fn in self._listeners:
            self._listeners.remove(fn)

    def _emit(self, kind: str, action: Action) -> None:
        d = action.diff or Diff()
        ev = EditEvent(kind, action.description, d.frames, d.ids)
        for fn in list(self._listeners):
            try:
                fn(ev)
            except Exception:  # a broken view must not break the edit, which is done
                log.exception("edit listener %r failed", fn)

    # ---- actions -----------------------------------------------------------------------
    def delete_cell(self, t: int, track_id: int) -> None:
        """Remove a track's cell from frame ``t`` (a hole splits the track, gap-linked)."""
        self.do(DeleteCell(t=int(t), track_id=int(track_id)))

    def paint_cell(self, t: int, mask: np.ndarray, track_id: int | None = None, *,
                   replace: bool = True, overwrite: bool = True) -> int:
        """Paint a full-frame bool ``mask`` with ``track_id`` (new id when None); return the id.

        ``replace``: the cell becomes exactly ``mask`` (its other pixels in ``t`` cleared);
        otherwise ``mask`` is added. ``overwrite``: take pixels from other cells; otherwise
        paint background only.
        """
        return self.do(PaintCell(mask=mask, t=int(t), replace=bool(replace),
                                 overwrite=bool(overwrite),
                                 track_id=None if track_id is None else int(track_id)))

    def merge_cells(self, t: int, keep_id: int, drop_id: int) -> None:
        """In frame ``t``, cell ``drop_id`` becomes part of ``keep_id`` (seam closed)."""
        self.do(MergeCells(t=int(t), keep_id=int(keep_id), drop_id=int(drop_id)))

    def split_cell(self, t: int, track_id: int, line: Sequence[Sequence[float]] | None = None,
                   *, method: str = "watershed", new_id: int | None = None) -> int:
        """Split a cell in two by a polyline ``[(y, x), ...]`` or by ``method``
        (``"watershed"`` on the distance transform or ``"kmeans"`` on coordinates).

        The part overlapping the previous frame's cell most keeps ``track_id``; the other
        gets ``new_id`` (a new track when None), which is returned.
        """
        line_ = None if line is None else np.asarray(line, float).tolist()
        return self.do(SplitCell(t=int(t), track_id=int(track_id), line=line_, method=method,
                                 new_id=None if new_id is None else int(new_id)))

    def reassign_track(self, t: int, track_id: int, new_id: int | None = None) -> int:
        """From frame ``t`` on, track ``track_id`` is called ``new_id`` (returned; new when None).

        Daughters follow. ``new_id`` must have no cell in those frames (see :meth:`swap_tracks`).
        """
        return self.do(ReassignTrack(t=int(t), track_id=int(track_id),
                                     new_id=None if new_id is None else int(new_id), cut=False))

    def cut_track(self, t: int, track_id: int) -> int:
        """Unlink: frames ``t..last`` become a new track without parent; return its id."""
        return self.do(ReassignTrack(t=int(t), track_id=int(track_id), new_id=None, cut=True))

    def swap_tracks(self, t: int, a: int, b: int) -> None:
        """Exchange the identities of tracks ``a`` and ``b`` from frame ``t`` on."""
        self.do(SwapTracks(t=int(t), a=int(a), b=int(b)))

    def link_tracks(self, a: int, b: int) -> None:
        """Join ``b`` to the end of ``a``: one track when adjacent, else a CTC gap link."""
        self.do(LinkTracks(a=int(a), b=int(b)))

    def set_parent(self, child: int, parent: int) -> None:
        """Mark a division: ``parent`` (ending before ``child`` starts) becomes its parent."""
        self.do(SetParent(child=int(child), parent=int(parent)))

    def clear_parent(self, child: int) -> None:
        """Unmark a division: ``child`` gets no parent."""
        self.do(SetParent(child=int(child), parent=0))

    mark_division = set_parent
    unmark_division = clear_parent

    def delete_track(self, track_id: int) -> None:
        """Remove a whole track; its daughters become roots."""
        self.do(DeleteTrack(track_id=int(track_id)))

    def edit_pixels(self, t: int, ys, xs, values, *, label: str | None = None) -> None:
        """Set pixels ``(ys[k], xs[k])`` of frame ``t`` to ``values`` (scalar or per pixel).

        For free painting (e.g. a napari Labels brush or fill); tracks and lineage are then
        made consistent as for every other action. ``label`` names it in the history.
        """
        self.do(EditPixels(ys=ys, xs=xs, values=values, t=int(t), n=int(np.size(ys)),
                           label=label))

    # ---- review ----------------------------------------------------------------------
    def review_candidates(self, probability: np.ndarray | None = None, *,
                          min_overlap: float = 0.5, short_length: int = 2,
                          area_jump: float = 0.4, min_probability: float = 0.5,
                          border: int | None = 5, limit: int | None = None) -> list[Candidate]:
        """Events most likely to be wrong, most doubtful first.

        Parameters
        ----------
        probability : (T, Y, X) float array, optional
            A per-pixel membership/foreground probability; cells whose mean is below
            ``min_probability`` are listed.
        min_overlap : float
            Kept for callers; divisions are judged by where the daughters start (more than one
            mother's width away from her is doubtful), and by their number (not two).
        short_length : int
            Tracks of at most this many frames (not touching the first/last frame).
        area_jump : float
            Relative area change ``|a1 - a0| / max(a0, a1)`` between consecutive frames
            (unless ``border`` is set and the cell touches the frame edge: cut off by it).
        border : int or None
            Also list tracks that start without a parent or end without daughters inside the
            movie (not at its first/last frame) farther than ``border`` px from the frame edge:
            lost or spurious cells (score 0.3). ``None`` skips this check.
        limit : int, optional
            Return at most this many.
        """
        T = self.shape[0]
        out: list[Candidate] = []

        def pos(t, i):
            sl = self._bbox(t, i)
            if sl is None:
                return (float("nan"), float("nan"))
            m = self._labels[t][sl] == i
            cy, cx = ndi.center_of_mass(m)
            return (float(sl[0].start + cy), float(sl[1].start + cx))

        def width(t, i):
            return float(np.sqrt(4 * self._counts[t].get(i, 0) / np.pi))

        children: dict[int, list[int]] = {}
        for c, r in sorted(self._rows.items()):
            if r[2]:
                children.setdefault(r[2], []).append(c)
        for p, kids in sorted(children.items()):
            if p not in self._rows:
                continue
            pl = self._rows[p][1]
            # Children starting later are CTC gap links, not divisions.
            div = [c for c in kids if self._rows[c][0] == pl + 1]
            if len(div) not in (0, 2):
                y, x = pos(pl, p)
                out.append(Candidate(pl, p, y, x,
                                     f"cell {p} divides into {len(div)} cells at frame {pl + 1}; a "
                                     f"mitosis gives two: merge the pieces of one daughter, or "
                                     f"unlink the extra ones", 0.8))
            py, px = pos(pl, p)
            for c in div:
                y, x = pos(pl + 1, c)
                d = float(np.hypot(y - py, x - px))
                w = max(width(pl, p), 1.0)
                if d > w:
                    out.append(Candidate(pl + 1, c, y, x,
                                         f"daughter {c} starts {d:.0f} px ({d / w:.1f} mother widths) "
                                         f"from her mother {p}, far for a mitosis: check the "
                                         f"division at frame {pl + 1}", min(1.0, 0.4 + 0.2 * d / w)))
        reach = self._motion_reach()
        for i, (f, l, _) in sorted(self._rows.items()):
            n = l - f + 1
            if n <= short_length and f > 0 and l < T - 1:
                y, x = pos(f, i)
                out.append(Candidate(f, i, y, x,
                                     f"cell {i} lasts only {n} frame(s) ({f}-{l}): a fragment or a "
                                     f"false detection? delete it or merge it into its neighbour",
                                     0.5 + 0.4 * (short_length - n + 1) / short_length))
            if border is not None and n > short_length:
                for t, what, ok in ((f, "appears", f == 0 or self._rows[i][2]),
                                    (l, "disappears", l == T - 1 or i in children)):
                    sl = None if ok else self._bbox(t, i)
                    if sl is not None and min(sl[0].start, sl[1].start) > border and \
                            sl[0].stop < self.shape[1] - border and sl[1].stop < self.shape[2] - border:
                        y, x = pos(t, i)
                        hint = ("lost earlier or born in a missed division? link it to its "
                                "past" if what == "appears" else "lost, or divides unseen? link "
                                "it to its future")
                        out.append(Candidate(t, i, y, x, f"{what} away from the border: {hint}", 0.3))
            prev = pos(f, i) if reach else None
            for t in range(f + 1, l + 1):
                a0, a1 = self._counts[t - 1][i], self._counts[t][i]
                jump = abs(a1 - a0) / max(a0, a1)
                if jump > area_jump and not (border is not None and (
                        self._at_edge(t - 1, i) or self._at_edge(t, i))):
                    y, x = pos(t, i)
                    how = "grows" if a1 > a0 else "shrinks"
                    what = ("merged with a neighbour?" if a1 > a0 else "split, or partly lost?")
                    out.append(Candidate(t, i, y, x, f"cell {i} {how} from {a0} to {a1} px at "
                                                     f"frame {t}: {what}", jump))
                if reach:
                    cur = pos(t, i)
                    step = float(np.hypot(cur[0] - prev[0], cur[1] - prev[1]))
                    if step > reach:
                        out.append(Candidate(t, i, cur[0], cur[1],
                                             f"cell {i} jumps {step:.0f} px between frames {t - 1} "
                                             f"and {t} (cells here move up to {reach:.0f}): two "
                                             f"cells may have swapped identity at frame {t}",
                                             min(1.0, 0.5 * step / reach)))
                    prev = cur
        if probability is not None:
            prob = np.asarray(probability)
            if prob.shape != self.shape:
                raise ValueError(f"probability must have the labels' shape {self.shape}, got {prob.shape}")
            for t in range(T):
                ids = sorted(self._counts[t])
                if not ids:
                    continue
                means = ndi.mean(np.asarray(prob[t], float), self._labels[t], ids)
                for i, m in zip(ids, np.atleast_1d(means)):
                    if m < min_probability:
                        y, x = pos(t, i)
                        out.append(Candidate(t, i, y, x, f"mean probability {m:.2f}",
                                             float(1.0 - m)))
        out.sort(key=lambda c: (-c.score, c.frame, c.track_id))
        return out[:limit] if limit is not None else out

    def _motion_reach(self) -> float | None:
        """Farthest a cell moves between frames in this movie (as the linker learns it:
        :func:`~napari_cosine_tracker.core.link.estimate_motion`), or None with too few cells."""
        from .link import cell_features, estimate_motion

        cells = cell_features(self._labels)
        if len(cells) < 10:
            return None
        return estimate_motion(cells)

    # ---- persistence -------------------------------------------------------------------
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the project folder (state + undo/redo stacks) atomically; return it.

        ``path`` (a folder, e.g. :func:`default_project_path`) defaults to
        :attr:`project_path`, set by :meth:`open` and earlier saves. The labels at the
        start of the history are written once (``base-<uid>.npz``); each later save only
        rewrites ``state.npz`` (history + metadata), so autosaving a long movie is cheap.
        Nothing outside ``path`` is written; file names never come from file contents.
        """
        self._not_in_group("save")
        if path is None:
            if self.project_path is None:
                raise ValueError("no project folder: pass save(path), e.g. default_project_path(movie)")
            path = self.project_path
        folder = Path(path)
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} is a file; a project is a folder (e.g. movie{PROJECT_SUFFIX})")
        ours = re.compile(r"^(state\.npz|base-[0-9a-f]{32}\.npz|\..*\.tmp)$")
        if folder.is_dir() and not all(ours.match(p.name) for p in folder.iterdir()):
            raise ValueError(f"{folder} is a non-empty folder that is not a project; choose a new "
                             f"or empty folder (e.g. movie{PROJECT_SUFFIX})")
        if self._base_uid is None:
            self._base_uid = uuid.uuid4().hex
        state = _pack(self)  # before touching the disk: bad metadata writes nothing
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # left by a crash during an earlier save
            stale.unlink()
        base = folder / f"base-{self._base_uid}.npz"
        if not base.is_file():
            labels, lineage = self._base_state()
            header = {"format": PROJECT_FORMAT, "version": PROJECT_VERSION, "uid": self._base_uid}
            _atomic_savez(base, {"header": _json_array(header), "labels": labels,
                                 "lineage": lineage})
        _atomic_savez(folder / _STATE, state)
        # The new state names the new base: older bases are no longer needed.
        for old in folder.glob("base-*.npz"):
            if old != base:
                old.unlink()
        self.project_path = folder
        return folder

    autosave = save

    @classmethod
    def open(cls, path: str | os.PathLike) -> TrackEditor:
        """Restore a project saved by :meth:`save`, undo/redo stacks included."""
        folder = Path(path)
        if not (folder / _STATE).is_file():
            raise FileNotFoundError(f"no project at {folder} ({_STATE} not found)")
        state = _load_npz(folder / _STATE)
        header = _check_header(state, folder / _STATE)
        uid = header.get("base")
        if not isinstance(uid, str) or not re.fullmatch(r"[0-9a-f]{32}", uid):
            raise ValueError(f"{folder / _STATE}: corrupt project file: bad base id {uid!r}")
        base_path = folder / f"base-{uid}.npz"
        if not base_path.is_file():
            raise FileNotFoundError(f"{folder}: the project's base labels {base_path.name} are missing")
        base = _load_npz(base_path)
        bh = _check_header(base, base_path)
        if bh.get("uid") != uid or not {"labels", "lineage"} <= set(base):
            raise ValueError(f"{base_path}: corrupt project file: not the base of {_STATE}")
        labels = base["labels"]
        if list(labels.shape) != header.get("shape") or labels.dtype.str != header.get("dtype"):
            raise ValueError(f"{base_path}: corrupt project file: labels do not match {_STATE}")
        ed = cls(labels, base["lineage"], copy=False, meta=header.get("meta") or {})
        undo, redo = _unpack(state, header, labels.shape, labels.dtype, folder / _STATE)
        for a in undo:  # replay the history on the base
            a.diff.apply(ed)
        if not np.array_equal(ed.lineage, state.get("lineage")):
            raise ValueError(f"{folder}: corrupt project: replaying the history does not give "
                             f"the saved lineage")
        ed._undo, ed._redo = undo, redo
        ed._next_id = max(ed._next_id, int(header.get("next_id", 0)))
        ed._base_uid = uid
        ed.project_path = folder
        return ed

    @classmethod
    def from_ctc_result(cls, res_dir: str | os.PathLike, *, repair: bool = False) -> TrackEditor:
        """Editor on a CTC result folder (``mask*.tif`` + ``res_track.txt``), read into memory."""
        from . import io

        labels, lineage = io.read_ctc_result(res_dir)
        return cls(np.asarray(labels), lineage, copy=False, repair=repair,
                   meta={"source": str(res_dir)})

    def export(self, fmt: str, out: str | os.PathLike, **kwargs) -> Path:
        """Write the current state as ``"ctc"``, ``"geff"`` or ``"csv"`` (see :mod:`.export`)."""
        from .export import export

        return export(self._labels, self.lineage, fmt, out, **kwargs)

    def clear_history(self) -> None:
        """Forget both stacks: the current state becomes the start (not undoable)."""
        self._undo.clear()
        self._redo.clear()
        self._base_uid = None  # the next save writes the current labels as the new base

    def _base_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Labels and lineage before the first action of the undo stack (a copy)."""
        labels = self._labels.copy()
        rows = dict(self._rows)
        for a in reversed(self._undo):
            for p in reversed(a.diff.patches):
                h, w = p.old.shape
                labels[p.t, p.y0 : p.y0 + h, p.x0 : p.x0 + w] = p.old
            for i, (old, _) in a.diff.rows.items():
                if old is None:
                    rows.pop(i, None)
                else:
                    rows[i] = old
        lin = np.array([(i, *r) for i, r in sorted(rows.items())], np.int64).reshape(-1, 4)
        return labels, lin


# --------------------------------------------------------------------------------------
# Project files
# --------------------------------------------------------------------------------------

_STATE = "state.npz"


def _json_array(obj) -> np.ndarray:
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error,
            NotImplementedError) as e:  # a damaged member fails in zlib or in numpy's header
        raise ValueError(f"{path} is not a readable project file: {e}") from e
    # np.load hands back members that are not .npy arrays as raw bytes: never use those (a
    # needed one that is missing is then reported as missing).
    return {k: v for k, v in data.items() if isinstance(v, np.ndarray)}


def _check_header(data: dict[str, np.ndarray], path: Path) -> dict:
    try:
        header = json.loads(data["header"].tobytes().decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: corrupt project file: no JSON header ({e})") from e
    if not isinstance(header, dict) or header.get("format") != PROJECT_FORMAT:
        raise ValueError(f"{path}: not a {PROJECT_FORMAT} file")
    if header.get("version") != PROJECT_VERSION:
        raise ValueError(f"{path}: project version {header.get('version')} is not supported "
                         f"(this program reads version {PROJECT_VERSION})")
    return header


def _pack(ed: TrackEditor) -> dict[str, np.ndarray]:
    actions_json: dict[str, list] = {"undo": [], "redo": []}
    p_act, p_box, olds, news = [], [], [], []
    rows = []
    k = 0
    for name, stack in (("undo", ed._undo), ("redo", ed._redo)):
        for a in stack:
            d = a.diff
            actions_json[name].append({"kind": a.kind, "params": a.params, "result": a.result})
            for p in d.patches:
                p_act.append(k)
                p_box.append((p.t, p.y0, p.x0, p.old.shape[0], p.old.shape[1]))
                olds.append(p.old.ravel())
                news.append(p.new.ravel())
            for i, (old, new) in d.rows.items():
                rows.append((k, i, old is not None, *(old or (0, 0, 0)),
                             new is not None, *(new or (0, 0, 0))))
            k += 1
    dt = ed._labels.dtype
    header = {
        "format": PROJECT_FORMAT,
        "version": PROJECT_VERSION,
        "base": ed._base_uid,
        "shape": list(ed.shape),
        "dtype": dt.str,
        "next_id": ed._next_id,
        "actions": actions_json,
        "meta": ed.meta,
    }
    try:
        header_array = _json_array(header)
    except TypeError as e:
        raise ValueError(f"editor.meta must be JSON-serialisable to be saved: {e}") from e
    return {
        "header": header_array,
        "lineage": ed.lineage,
        "patch_action": np.asarray(p_act, np.int64),
        "patch_box": np.asarray(p_box, np.int64).reshape(-1, 5),
        "patch_old": np.concatenate(olds).astype(dt) if olds else np.zeros(0, dt),
        "patch_new": np.concatenate(news).astype(dt) if news else np.zeros(0, dt),
        "rows": np.asarray(rows, np.int64).reshape(-1, 10),
    }


def _atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    from .io import atomic_file

    with atomic_file(path) as f:
        np.savez_compressed(f, **arrays)


def _unpack(data: dict[str, np.ndarray], header: dict, shape, dtype, path: Path
            ) -> tuple[list[Action], list[Action]]:
    def bad(msg: str) -> ValueError:
        return ValueError(f"{path}: corrupt project file: {msg}")

    need = {"lineage", "patch_action", "patch_box", "patch_old", "patch_new", "rows"}
    if missing := need - set(data):
        raise bad(f"missing arrays {sorted(missing)}")
    acts = header.get("actions")
    if not isinstance(acts, dict) or not all(isinstance(acts.get(k), list) for k in ("undo", "redo")):
        raise bad("no action lists")
    n_undo, n_redo = len(acts["undo"]), len(acts["redo"])
    actions: list[Action] = []
    for spec in acts["undo"] + acts["redo"]:
        cls = _REGISTRY.get(spec.get("kind")) if isinstance(spec, dict) else None
        if cls is None or not isinstance(spec.get("params"), dict):
            raise bad(f"unknown action {spec.get('kind') if isinstance(spec, dict) else spec!r}")
        a = cls.__new__(cls)
        Action.__init__(a, **spec["params"])
        a.result = spec.get("result")
        a.diff = Diff()
        actions.append(a)
    T, H, W = shape
    box, pa = data["patch_box"], data["patch_action"]
    olds, news = data["patch_old"], data["patch_new"]
    if len(box) != len(pa) or box.ndim != 2 or box.shape[1] != 5:
        raise bad("patch tables do not match")
    off = 0
    for k, (t, y0, x0, h, w) in zip(pa.tolist(), box.tolist()):
        if not (0 <= k < len(actions) and 0 <= t < T and 0 <= y0 and y0 + h <= H
                and 0 <= x0 and x0 + w <= W and h > 0 and w > 0):
            raise bad(f"patch outside the movie: action {k}, frame {t}, box {y0, x0, h, w}")
        n = h * w
        if off + n > len(olds) or off + n > len(news):
            raise bad("patch values are truncated")
        actions[k].diff.patches.append(Patch(
            t, y0, x0, olds[off : off + n].reshape(h, w).astype(dtype),
            news[off : off + n].reshape(h, w).astype(dtype)))
        off += n
    rows = data["rows"]
    if rows.ndim != 2 or rows.shape[1] != 10:
        raise bad("lineage change table has the wrong shape")
    for k, i, ho, of, ol, op, hn, nf, nl, np_ in rows.tolist():
        if not 0 <= k < len(actions):
            raise bad(f"row for unknown action {k}")
        actions[k].diff.rows[i] = ((of, ol, op) if ho else None, (nf, nl, np_) if hn else None)
    return actions[:n_undo], actions[n_undo : n_undo + n_redo]
