"""Every edit as an Action (command pattern): its first apply runs in a transaction and
records a Diff; undo and redo replay it. Edits that would break the CTC rules are repaired
inside the same action."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage as ndi

from .diff import Diff, Row, _Txn

if TYPE_CHECKING:  # annotations only: the editor imports this module
    from .editor import TrackEditor

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


