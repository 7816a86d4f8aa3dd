"""TrackEditor: a tracked label stack and its lineage kept consistent, with undo/redo,
edit groups, listeners and the review list."""

from __future__ import annotations

import logging
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from ..io.lineage import lineage_from_labels
from .actions import (
    Action,
    DeleteCell,
    DeleteTrack,
    EditPixels,
    GroupAction,
    LinkTracks,
    MergeCells,
    PaintCell,
    ReassignTrack,
    SetParent,
    SplitCell,
    SwapTracks,
    _compose,
    _need_track,
)
from .checks import _as_lineage, _frame_counts, _problems, check_consistency
from .diff import Candidate, Diff, EditEvent, Row, _mask_bbox, _Txn
from .project import (
    _STATE,
    PROJECT_FORMAT,
    PROJECT_SUFFIX,
    PROJECT_VERSION,
    _atomic_savez,
    _check_header,
    _json_array,
    _load_npz,
    _pack,
    _unpack,
)

log = logging.getLogger(__name__)

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
        lin = (lineage_from_labels(self._labels, gaps="span") if lineage is None
               else _as_lineage(lineage))
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
        from ..link import cell_features, estimate_motion

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
        from .. import io

        labels, lineage = io.read_ctc_result(res_dir)
        return cls(np.asarray(labels), lineage, copy=False, repair=repair,
                   meta={"source": str(res_dir)})

    def export(self, fmt: str, out: str | os.PathLike, **kwargs) -> Path:
        """Write the current state as ``"ctc"``, ``"geff"`` or ``"csv"`` (see :mod:`.export`)."""
        from ..export import export

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
