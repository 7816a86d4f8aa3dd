"""What an edit changed (Diff: bounding-box patches and lineage rows), the events listeners
receive, review candidates, and the transaction that records a Diff or rolls back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: the editor imports this module
    from .editor import TrackEditor

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


def _mask_bbox(m: np.ndarray) -> tuple[slice, slice] | None:
    """Bounding box of a 2-D bool mask (any() per axis: far faster than nonzero())."""
    rows = np.flatnonzero(m.any(1))
    if not len(rows):
        return None
    cols = np.flatnonzero(m[rows[0] : rows[-1] + 1].any(0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
