"""Tracking: link instances of consecutive frames into CTC tracks with divisions.

Pair tracking (the method): the clustering of the pair ``(t, t+1)`` gives instances of
frames ``t`` and ``t+1`` whose ids are shared when they belong to one cluster (``links``).
Frame ``t`` is also clustered in the pair ``(t-1, t)``; the two segmentations of frame ``t``
are matched by IoU, which chains the pairs into tracks.

**Final segmentation of a frame.** By default (``frame_segmentation="second"``) frame
``t >= 1`` keeps its segmentation from the pair ``(t-1, t)``, in which it is the *second*
frame; frame 0 keeps the one from the pair ``(0, 1)``. In that pair every cell of ``t`` was
clustered together with its own predecessor, a division shows up there (one cluster of
``t-1`` with two pieces in ``t``, or daughters that overlap their mother), and frame ``t`` is
settled as soon as the pair ``(t, t+1)`` has linked it forward:

    S_t  --IoU on frame t-->  A_t (pair t, t+1)  --shared cluster-->  B_{t+1} = S_{t+1}

``frame_segmentation="first"`` keeps instead the clustering from the pair ``(t, t+1)`` (the
last frame from the last pair), which favours cells that appear (newborn daughters are in
both frames of that pair) over cells that vanish; it needs one more pair before a frame is
settled. On six synthetic movies both gave the same division F1 overall and "second" a
slightly better segmentation, hence the default.

**Links and tracks.** An instance of ``t+1`` with no linked predecessor attaches to the
instance of ``t`` that covers at least ``overlap_threshold`` of it (spatial overlap between the
frames), which catches divisions whose daughters got new embedding directions. An instance
with several predecessors keeps the best one (a merge is not a CTC event). One successor
continues the track; two or more end it and start daughter tracks whose parent it is, so a
parent always ends exactly the frame before its daughters start. A successor much smaller
than the largest one (``min_daughter_ratio``) is a fragment, not a daughter: it starts its own
track. An instance that another cell ran into (a merge, e.g. touching cells segmented as one)
and that comes apart again within ``unmerge_frames`` frames is not a division: its best-linked
piece continues the track, the others start new tracks. Tracks never have gaps: a cell that
is lost and found again becomes a new track without parent.

**Short tracks.** Tracks shorter than ``min_track_length`` frames without daughters are
removed, except those that touch the first or the last frame (a cell entering or leaving).
When a division loses one of its two daughters that way, the other daughter continues the
mother's track.

**Streaming.** :class:`Tracker` takes one pair result at a time and hands back every frame
whose track ids can no longer change, so memory stays flat with movie length (it holds at most
``min_track_length`` frames, and one pair more with ``frame_segmentation="first"``). Emitted
ids are not compacted; :func:`track_pairs` and :func:`link_frames` renumber them 1..N in order
of appearance.

:func:`link_frames` is the plain frame-to-frame IoU linker (for the classical reference),
built from the same matching and the same track logic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .paramspec import min_daughter_ratio as daughter_ratio_param

__all__ = [
    "TrackParams",
    "Tracker",
    "track_pairs",
    "link_frames",
    "match_instances",
    "overlap_table",
    "keep_ids",
]


@dataclass(frozen=True)
class TrackParams:
    """Parameters of the tracker.

    Attributes
    ----------
    iou_threshold : float
        Smallest IoU for matching two instances one-to-one: the two segmentations of a shared
        frame (pair tracking), or consecutive frames (:func:`link_frames`). In (0, 1].
    overlap_threshold : float
        An instance left unmatched attaches to the instance (of the other segmentation of its
        frame, or of the previous frame) that covers at least this fraction of its pixels;
        this is how divisions are found when daughters are not in their mother's cluster.
        In (0, 1]; 1 effectively disables it.
    min_track_length : int
        Tracks with fewer frames and no daughters are removed (except at the first and last
        frame). 1 keeps every track.
    unmerge_frames : int
        An instance that two tracks ran into (a merge: e.g. touching cells segmented as one)
        and that splits again within this many frames is not a division: its best-linked
        piece continues the track, the others start new tracks. 0 disables this.
    frame_segmentation : str
        Which pair's clustering of frame t is kept (pair tracking only): ``"second"``, the
        pair ``(t-1, t)``, or ``"first"``, the pair ``(t, t+1)``. See the module notes.
    min_daughter_ratio : float
        A split whose smaller piece has less than this fraction of the larger piece's area,
        in the frame it appears, is a fragment breaking off a cell, not a mitosis (whose
        daughters are about equal): the larger piece continues the track and the smaller one
        starts its own. In [0, 1); 0 counts every split as a division.
    linker : str
        How the final cells of the model pipeline are joined into tracks: ``"global"`` (the
        default) keeps the pair clusterings' links and re-links the rest over the whole
        movie with :mod:`.link` (cells lost for a frame or two brought back, divisions whose
        daughters left their mother's footprint, no division into three, "divisions" that
        are not either side of the mother dropped); ``"pairs"`` is the paper's chaining of
        pair clusterings through IoU alone. On the model's own masks global measured level
        or ahead (OP_CLB +0.012 SIM+, +0.006 MSC, +0.002 DIC-HeLa, -0.001 GOWT1; on given
        masks far ahead: docs/benchmarks.md, "Linking"), and its lineages obey the rules.
    """

    iou_threshold: float = 0.3
    overlap_threshold: float = 0.5
    min_track_length: int = 2
    frame_segmentation: str = "second"
    unmerge_frames: int = 2
    min_daughter_ratio: float = daughter_ratio_param(0.25)  # label and help: core.paramspec
    linker: str = "global"

    def __post_init__(self):
        if self.linker not in ("global", "pairs"):
            raise ValueError(
                "TrackParams.linker must be 'global' (re-link the whole movie) or 'pairs' "
                f"(chain the pair clusterings by IoU), got {self.linker!r}."
            )
        v = self.min_daughter_ratio
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or not (0 <= v < 1):
            raise ValueError(f"TrackParams.min_daughter_ratio must lie in [0, 1), got {v!r}.")
        for name in ("iou_threshold", "overlap_threshold"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not (0 < v <= 1):
                raise ValueError(f"TrackParams.{name} must lie in (0, 1], got {v!r}.")
        if self.frame_segmentation not in ("first", "second"):
            raise ValueError(
                "TrackParams.frame_segmentation must be 'first' (frame t from the pair "
                "(t, t+1)) or 'second' (from the pair (t-1, t)), got "
                f"{self.frame_segmentation!r}."
            )
        v = self.min_track_length
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(
                f"TrackParams.min_track_length must be an integer >= 1, got {v!r}."
            )
        v = self.unmerge_frames
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(
                f"TrackParams.unmerge_frames must be an integer >= 0, got {v!r}."
            )


# ----------------------------------------------------------------------------- matching


def overlap_table(labels_a: np.ndarray, labels_b: np.ndarray):
    """Pixel overlaps of two label images of the same shape.

    Returns
    -------
    ia, ib : ndarray, int64
        Pairs of ids (both > 0) that overlap.
    inter : ndarray, int64
        Overlapping pixels of each pair.
    size_a, size_b : dict
        Pixels of every id of each image.
    """
    la = np.asarray(labels_a)
    lb = np.asarray(labels_b)
    if la.shape != lb.shape:
        raise ValueError(f"label images differ in shape: {la.shape} vs {lb.shape}.")
    from scipy import sparse

    la = la.ravel().astype(np.intp)
    lb = lb.ravel().astype(np.intp)
    # Counts by bincount and a sparse count matrix rather than np.unique: sorting every
    # pixel cost most of the linking time on full frames.
    ca, cb = np.bincount(la), np.bincount(lb)
    ua, ub = np.flatnonzero(ca), np.flatnonzero(cb)
    ua, ub = ua[ua > 0], ub[ub > 0]
    m = np.flatnonzero((la > 0) & (lb > 0))
    pairs = sparse.coo_matrix((np.ones(m.size, np.int64), (la[m], lb[m])),
                              shape=(ca.size, cb.size)).tocsr().tocoo()  # row-major, summed
    return (pairs.row.astype(np.int64), pairs.col.astype(np.int64), pairs.data.astype(np.int64),
            dict(zip(ua.tolist(), ca[ua].tolist())), dict(zip(ub.tolist(), cb[ub].tolist())))


def match_instances(labels_a, labels_b, iou_threshold: float = 0.3,
                    overlap_threshold: float | None = None):
    """Match the instances of two label images by IoU.

    One-to-one matches maximise the summed IoU (Hungarian) among pairs with
    ``IoU >= iou_threshold``. With ``overlap_threshold``, every instance of ``labels_b`` left
    unmatched then attaches to the instance of ``labels_a`` that covers the largest fraction
    of it, if that fraction is ``>= overlap_threshold`` (many-to-one).

    Returns
    -------
    ndarray, float64, shape (K, 3)
        Rows ``id_a, id_b, iou``; one-to-one matches first.
    """
    from scipy.optimize import linear_sum_assignment

    ia, ib, inter, sa, sb = overlap_table(labels_a, labels_b)
    if ia.size == 0:
        return np.zeros((0, 3))
    union = np.array([sa[a] for a in ia.tolist()]) + np.array([sb[b] for b in ib.tolist()]) - inter
    iou = inter / union
    ua, ra = np.unique(ia, return_inverse=True)
    ub, rb = np.unique(ib, return_inverse=True)
    M = np.zeros((ua.size, ub.size))
    M[ra, rb] = iou
    r, c = linear_sum_assignment(M, maximize=True)
    ok = M[r, c] >= iou_threshold
    rows = [(float(ua[i]), float(ub[j]), float(M[i, j])) for i, j in zip(r[ok], c[ok])]
    if overlap_threshold is not None:
        matched_b = set(ub[c[ok]].tolist())
        frac = inter / np.array([sb[b] for b in ib.tolist()])
        best: dict[int, tuple[float, int, float]] = {}
        for a, b, f, u in zip(ia.tolist(), ib.tolist(), frac.tolist(), iou.tolist()):
            if b in matched_b or f < overlap_threshold:
                continue
            if b not in best or f > best[b][0]:
                best[b] = (f, a, u)
        rows += [(float(a), float(b), float(u)) for b, (f, a, u) in sorted(best.items())]
    return np.asarray(rows, np.float64).reshape(-1, 3)


# ----------------------------------------------------------------------------- track logic


class _Linker:
    """Turns per-frame instances plus links between consecutive frames into CTC tracks."""

    def __init__(self, params: TrackParams):
        self.p = params
        self.t = -1  # index of the newest frame
        self.tracks: dict[int, list] = {}  # id -> [first, last, parent, children(set)]
        self.next_id = 1
        self.buffer: list[list] = []  # [t, labels, {obj: track}] of frames not emitted yet
        self.cur: dict[int, int] = {}  # {obj: track} of the newest frame (emitted or not)
        self.merged: dict[int, int] = {}  # objects of the newest frame that are merges: age

    def _new_track(self, t, parent):
        tid = self.next_id
        self.next_id += 1
        self.tracks[tid] = [t, t, parent, set()]
        if parent:
            self.tracks[parent][3].add(tid)
        return tid

    def first_frame(self, labels):
        self.t = 0
        objs = _ids(labels)
        self.cur = {o: self._new_track(0, 0) for o in objs}
        self.cur_labels = labels
        self.buffer.append([0, labels, self.cur])
        return self._emit()

    def add_frame(self, labels, edges):
        """Add frame ``t+1`` with edges ``(obj_t, obj_t1, score)`` from the newest frame."""
        t = self.t
        cur = self.cur
        objs = _ids(labels)
        objset = set(objs)
        # Each new object keeps its best-scoring predecessor (merges are not CTC events).
        pred: dict[int, tuple[float, int]] = {}
        n_pred: dict[int, set] = {}
        for a, b, s in edges:
            a, b = int(a), int(b)
            if a not in cur or b not in objset:
                continue
            n_pred.setdefault(b, set()).add(a)
            if b not in pred or s > pred[b][0]:
                pred[b] = (s, a)
        succ: dict[int, list[tuple[float, int]]] = {}
        for b, (sc, a) in pred.items():
            succ.setdefault(a, []).append((sc, b))
        nxt: dict[int, int] = {}
        merged: dict[int, int] = {}
        for a, bs in succ.items():
            tid = cur[a]
            if len(bs) == 1:
                b = bs[0][1]
                nxt[b] = tid
                self.tracks[tid][1] = t + 1
                if a in self.merged and self.merged[a] < self.p.unmerge_frames:
                    merged[b] = self.merged[a] + 1
            elif a in self.merged:
                # Two cells that had merged into one instance come apart again: not a
                # division. The best-linked piece continues the track, the others start anew.
                bs = sorted(bs, reverse=True)
                nxt[bs[0][1]] = tid
                self.tracks[tid][1] = t + 1
                for _, b in bs[1:]:
                    nxt[b] = self._new_track(t + 1, 0)
            else:
                daughters, fragments = self._split_daughters([b for _, b in bs], labels)
                if len(daughters) == 1:
                    nxt[daughters[0]] = tid
                    self.tracks[tid][1] = t + 1
                else:
                    for b in daughters:
                        nxt[b] = self._new_track(t + 1, tid)
                for b in fragments:
                    nxt[b] = self._new_track(t + 1, 0)
        for b in objs:
            if b not in nxt:
                nxt[b] = self._new_track(t + 1, 0)
        if self.p.unmerge_frames > 0:
            # A cell left without successor whose mask lies mostly under an instance of t+1
            # ran into it (e.g. touching cells segmented as one): that instance is a merge.
            lost = set(cur) - set(succ)
            if lost:
                ia, ib, inter, sa, _ = overlap_table(self.cur_labels, labels)
                for x, y, i in zip(ia.tolist(), ib.tolist(), inter.tolist()):
                    if x in lost and y in objset and i >= self.p.overlap_threshold * sa[x]:
                        n_pred.setdefault(y, set()).add(x)
            for b, ps in n_pred.items():
                if len(ps) > 1:
                    merged[b] = 1
        self.merged = merged
        self.t = t + 1
        self.cur = nxt
        self.cur_labels = labels
        self.buffer.append([t + 1, labels, nxt])
        # Tracks that did not reach t+1 ended at t: prune the short ones.
        alive = set(nxt.values())
        for tid in sorted(set(cur.values()) - alive):
            self._maybe_prune(tid)
        return self._emit()

    def _split_daughters(self, objs, labels):
        """The successors of one cell that are daughters, and those that are fragments (much
        smaller than the largest: see ``min_daughter_ratio``), each sorted by object id."""
        objs = sorted(objs)
        if not self.p.min_daughter_ratio:
            return objs, []
        area = np.bincount(labels.ravel(), minlength=objs[-1] + 1)[objs]
        small = area < self.p.min_daughter_ratio * area.max()
        return [o for o, s in zip(objs, small) if not s], [o for o, s in zip(objs, small) if s]

    def _maybe_prune(self, tid):
        if tid not in self.tracks:  # already folded into its mother
            return
        first, last, parent, children = self.tracks[tid]
        if children or last - first + 1 >= self.p.min_track_length or first == 0:
            return
        del self.tracks[tid]
        for fr in self.buffer:
            for o in [o for o, v in fr[2].items() if v == tid]:
                del fr[2][o]
        if parent:
            pt = self.tracks[parent]
            pt[3].discard(tid)
            if len(pt[3]) == 1:
                # A division with one daughter left is no division: she continues the mother.
                (child,) = pt[3]
                c = self.tracks.pop(child)
                pt[1] = c[1]
                pt[3] = c[3]
                for g in c[3]:
                    self.tracks[g][2] = parent
                for m in [fr[2] for fr in self.buffer] + [self.cur]:
                    for o, v in m.items():
                        if v == child:
                            m[o] = parent

    def _emit(self, final=False):
        # A track pruned later ends at t or after and is shorter than L, so it starts after
        # t - L + 1: frames up to there can no longer change.
        limit = self.t if final else self.t - self.p.min_track_length + 1
        out = []
        while self.buffer and self.buffer[0][0] <= limit:
            t, labels, m = self.buffer.pop(0)
            out.append((t, _apply(labels, m)))
        return out

    def finish(self):
        return self._emit(final=True)

    def lineage(self):
        rows = [(tid, f, l, p) for tid, (f, l, p, _) in sorted(self.tracks.items())]
        return np.asarray(rows, np.int64).reshape(-1, 4)


def _ids(labels):
    u = np.unique(labels)
    return u[u > 0].tolist()


def _apply(labels, mapping):
    if not mapping:
        return np.zeros(labels.shape, np.int32)
    keys = np.fromiter(mapping.keys(), np.int64)
    vals = np.fromiter(mapping.values(), np.int64)
    lut = np.zeros(int(max(keys.max(), labels.max())) + 1, np.int32)
    lut[keys] = vals
    return lut[labels]


def _as_pair(pair):
    """(labels_a, labels_b, links) from a PairResult, (a, b) or (a, b, links)."""
    if hasattr(pair, "labels_a") and hasattr(pair, "labels_b"):
        a, b = pair.labels_a, pair.labels_b
        links = getattr(pair, "links", None)
    else:
        try:
            items = tuple(pair)
        except TypeError:
            raise TypeError(
                "a pair must be a PairResult or a tuple (labels_a, labels_b[, links]), got "
                f"{type(pair).__name__}."
            ) from None
        if len(items) not in (2, 3):
            raise TypeError(
                f"a pair tuple must be (labels_a, labels_b[, links]), got {len(items)} items."
            )
        a, b = items[0], items[1]
        links = items[2] if len(items) == 3 else None
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(
            f"a pair needs two label images of the same 2-D shape, got {a.shape} and {b.shape}."
        )
    for name, x in (("labels_a", a), ("labels_b", b)):
        if not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label image, got dtype {x.dtype}.")
        if x.size and x.min() < 0:
            raise ValueError(f"{name} has negative labels; use 0 for background.")
    if links is None:
        # Plain contract: an id present in both frames is one cell.
        common = np.intersect1d(_ids(a), _ids(b))
        links = np.stack([common, common], 1)
    links = np.asarray(links, np.int64).reshape(-1, 2)
    return a, b, links


# ----------------------------------------------------------------------------- public


def _chain_edges(S, x_to_s, links, N, b_to_n, p):
    """Edges ``(s, n, score)`` from the final instances ``S`` of frame t to those, ``N``, of
    frame t+1, through a pair's ``links`` ``(x, b)``: ``x`` maps to ``S`` by ``x_to_s`` and
    ``b`` to ``N`` by ``b_to_n`` (identity where None). Instances of ``N`` left unlinked
    attach to the instance of ``S`` covering ``overlap_threshold`` of them (a division when
    its daughters got new embedding directions). Scores: 1 + IoU across the frames for
    clustering links, the covered fraction for overlap links, so clustering wins merges."""
    ia, ib, inter, sa, sb = overlap_table(S, N)
    ov = {(int(x), int(y)): i / (sa[x] + sb[y] - i)
          for x, y, i in zip(ia.tolist(), ib.tolist(), inter.tolist())}
    edges = []
    for x, b in links.tolist():
        s = x if x_to_s is None else x_to_s.get(x)
        if s is None or s not in sa:
            continue
        for n in ([b] if b_to_n is None else b_to_n.get(b, [])):
            if n in sb:
                edges.append((s, n, 1.0 + ov.get((s, n), 0.0)))
    linked = {e[1] for e in edges}
    for x, y, i in zip(ia.tolist(), ib.tolist(), inter.tolist()):
        if y not in linked and i >= p.overlap_threshold * sb[y]:
            edges.append((x, y, i / sb[y]))
    return edges


class Tracker:
    """Streaming pair tracker: feed the pair results ``(0, 1), (1, 2), ...`` in order.

    Examples
    --------
    >>> tr = Tracker()                                     # doctest: +SKIP
    >>> for t in range(1, T):
    ...     for frame_index, tracked in tr.add_pair(cluster_pair(emb[t - 1], emb[t])):
    ...         write(frame_index, tracked)
    >>> for frame_index, tracked in tr.finish():
    ...     write(frame_index, tracked)
    >>> lineage = tr.lineage()
    """

    def __init__(self, params: TrackParams | None = None):
        self.params = params if params is not None else TrackParams()
        if not isinstance(self.params, TrackParams):
            raise TypeError(f"params must be a TrackParams, got {type(params).__name__}.")
        self._lk = _Linker(self.params)
        self._prev = None  # (labels_a, labels_b, links) of the previous pair
        self._shape = None
        self._done = False

    @property
    def n_frames(self) -> int:
        """Frames seen so far."""
        return self._lk.t + 1

    def add_pair(self, pair) -> list[tuple[int, np.ndarray]]:
        """Add the clustering of the next pair ``(t, t+1)``.

        Parameters
        ----------
        pair : PairResult or tuple
            ``PairResult`` from :mod:`.cluster`, or ``(labels_a, labels_b)`` (ids present in
            both frames are the same cell), or ``(labels_a, labels_b, links)`` with ``links``
            rows ``(id_a, id_b)``.

        Returns
        -------
        list of (int, ndarray)
            Frames that became final: ``(frame index, tracked labels (Y, X) int32)``.
        """
        if self._done:
            raise RuntimeError("Tracker.finish() was called; make a new Tracker.")
        a, b, links = _as_pair(pair)
        if self._shape is None:
            self._shape = a.shape
        elif a.shape != self._shape:
            raise ValueError(
                f"pair {self.n_frames - 1} has frames of shape {a.shape}, earlier pairs "
                f"{self._shape}."
            )
        p = self.params
        out = []
        if self._prev is None:
            out += self._lk.first_frame(a)
            if p.frame_segmentation == "second":
                out += self._lk.add_frame(b, _chain_edges(a, None, links, b, None, p))
        elif p.frame_segmentation == "second":
            S = self._prev[1]
            # The two segmentations of frame t: S (from pair t-1, t) and a (from pair t, t+1).
            m = match_instances(S, a, p.iou_threshold, p.overlap_threshold)
            x_to_s = {int(r[1]): int(r[0]) for r in m}
            out += self._lk.add_frame(b, _chain_edges(S, x_to_s, links, b, None, p))
        else:
            pa, pb, plinks = self._prev
            # Frame t's two segmentations: pb (from pair t-1, t) and a (final, pair t, t+1).
            m = match_instances(pb, a, p.iou_threshold, p.overlap_threshold)
            b_to_n: dict[int, list[int]] = {}
            for r in m:
                b_to_n.setdefault(int(r[0]), []).append(int(r[1]))
            out += self._lk.add_frame(a, _chain_edges(pa, None, plinks, a, b_to_n, p))
        self._prev = (a, b, links)
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """No more pairs: hand back the remaining frames (their tracks are final now)."""
        out = []
        p = self.params
        if not self._done and self._prev is not None and p.frame_segmentation == "first":
            # The last frame only exists as the second frame of the last pair.
            pa, pb, plinks = self._prev
            out += self._lk.add_frame(pb, _chain_edges(pa, None, plinks, pb, None, p))
        self._done = True
        return out + self._lk.finish()

    def lineage(self) -> np.ndarray:
        """Tracks so far, ``(N, 4)`` int64 rows ``id, first, last, parent`` sorted by id."""
        return self._lk.lineage()

    # -- checkpoints (resume a killed run) -----------------------------------------------

    def get_state(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: the tracker mid-movie as numpy arrays and JSON-able values
        (no pickle), for :meth:`set_state` in a later process."""
        lk = self._lk
        arrays: dict[str, np.ndarray] = {}
        meta = {
            "t": lk.t, "next_id": lk.next_id, "done": self._done,
            "shape": list(self._shape) if self._shape is not None else None,
            "tracks": [[i, f, l, p, sorted(c)] for i, (f, l, p, c) in sorted(lk.tracks.items())],
            "buffer": [[t, sorted(m.items())] for t, _, m in lk.buffer],
            "cur": sorted(lk.cur.items()),
            "merged": sorted(lk.merged.items()),
            # The newest frame's {object: track} is one dict shared by the buffer and cur:
            # pruning edits it through the buffer, so the restored state must share it too.
            "cur_in_buffer": bool(lk.buffer) and lk.buffer[-1][2] is lk.cur,
            "has_prev": self._prev is not None,
            "has_cur_labels": hasattr(lk, "cur_labels"),
        }
        for k, (_, labels, _) in enumerate(lk.buffer):
            arrays[f"buffer{k}"] = labels
        if hasattr(lk, "cur_labels"):
            arrays["cur_labels"] = lk.cur_labels
        if self._prev is not None:
            arrays["prev_a"], arrays["prev_b"], arrays["prev_links"] = self._prev
        return arrays, meta

    def set_state(self, arrays: dict, meta: dict) -> None:
        """Restore :meth:`get_state`'s output (the same params must be in use)."""
        lk = _Linker(self.params)
        lk.t, lk.next_id = int(meta["t"]), int(meta["next_id"])
        lk.tracks = {int(i): [int(f), int(l), int(p), set(int(x) for x in c)]
                     for i, f, l, p, c in meta["tracks"]}
        lk.buffer = [[int(t), np.asarray(arrays[f"buffer{k}"]), {int(o): int(v) for o, v in m}]
                     for k, (t, m) in enumerate(meta["buffer"])]
        lk.cur = lk.buffer[-1][2] if meta["cur_in_buffer"] else {int(o): int(v) for o, v in meta["cur"]}
        lk.merged = {int(o): int(v) for o, v in meta["merged"]}
        if meta["has_cur_labels"]:
            lk.cur_labels = np.asarray(arrays["cur_labels"])
        self._lk = lk
        self._shape = tuple(meta["shape"]) if meta["shape"] is not None else None
        self._done = bool(meta["done"])
        self._prev = ((np.asarray(arrays["prev_a"]), np.asarray(arrays["prev_b"]),
                       np.asarray(arrays["prev_links"])) if meta["has_prev"] else None)


def _compact(tracked: np.ndarray, lineage: np.ndarray):
    """Renumber track ids 1..N by first frame, then old id."""
    if lineage.size == 0:
        return tracked, lineage
    order = np.lexsort((lineage[:, 0], lineage[:, 1]))
    old = lineage[order, 0]
    lut = np.zeros(int(max(old.max(), tracked.max())) + 1, np.int64)
    lut[old] = np.arange(1, old.size + 1)
    new = lineage[order].copy()
    new[:, 0] = lut[new[:, 0]]
    new[:, 3] = np.where(new[:, 3] > 0, lut[new[:, 3]], 0)
    new = new[np.argsort(new[:, 0])]
    return lut[tracked].astype(np.int32), new


def _collect(frames, T, shape):
    out = np.zeros((T,) + tuple(shape), np.int32)
    for t, lab in frames:
        out[t] = lab
    return out


def track_pairs(pair_labels: Sequence, params: TrackParams | None = None):
    """Track a whole movie from its T-1 pair clusterings.

    Parameters
    ----------
    pair_labels : sequence
        Pair ``k`` covers frames ``(k, k+1)``; each item as in :meth:`Tracker.add_pair`.
    params : TrackParams, optional

    Returns
    -------
    tracked : ndarray, int32, shape (T, Y, X)
        Track ids, renumbered 1..N in order of appearance.
    lineage : ndarray, int64, shape (N, 4)
        ``id, first, last, parent``.
    """
    pairs = list(pair_labels)
    if not pairs:
        raise ValueError("track_pairs needs at least one pair (a movie of 2 frames).")
    tr = Tracker(params)
    frames = []
    for pr in pairs:
        frames += tr.add_pair(pr)
    frames += tr.finish()
    tracked = _collect(frames, len(pairs) + 1, frames[0][1].shape)
    tracked, lineage = _compact(tracked, tr.lineage())
    return tracked.astype(np.int32), lineage


def link_frames(labels_per_frame: Iterable, params: TrackParams | None = None):
    """Link per-frame instance labels by IoU between consecutive frames.

    Instances of ``t+1`` match those of ``t`` one-to-one by IoU ``>= iou_threshold``; an
    unmatched one attaches to the instance of ``t`` covering ``>= overlap_threshold`` of it
    (a division when that instance also continues). Same track rules as :func:`track_pairs`.

    Parameters
    ----------
    labels_per_frame : iterable of (Y, X) integer arrays, or a (T, Y, X) array
    params : TrackParams, optional

    Returns
    -------
    tracked : ndarray, int32, shape (T, Y, X)
    lineage : ndarray, int64, shape (N, 4)
    """
    p = params if params is not None else TrackParams()
    if not isinstance(p, TrackParams):
        raise TypeError(f"params must be a TrackParams, got {type(params).__name__}.")
    lk = _Linker(p)
    frames, prev, shape = [], None, None
    for t, lab in enumerate(labels_per_frame):
        lab = np.asarray(lab)
        if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(
                f"frame {t}: expected a 2-D integer label image, got shape {lab.shape}, "
                f"dtype {lab.dtype}."
            )
        if shape is None:
            shape = lab.shape
            frames += lk.first_frame(lab)
        else:
            if lab.shape != shape:
                raise ValueError(f"frame {t} has shape {lab.shape}, frame 0 {shape}.")
            m = match_instances(prev, lab, p.iou_threshold, p.overlap_threshold)
            frames += lk.add_frame(lab, [tuple(r) for r in m])
        prev = lab
    if shape is None:
        raise ValueError("link_frames needs at least one frame.")
    frames += lk.finish()
    tracked = _collect(frames, lk.t + 1, shape)
    tracked, lineage = _compact(tracked, lk.lineage())
    return tracked.astype(np.int32), lineage


def keep_ids(pair_a: np.ndarray, pair_b: np.ndarray, ref_a: np.ndarray, ref_b: np.ndarray,
             next_id: int, min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, int]:
    """Relabel a pair clustering so its cells keep the ids of a reference (a tracking).

    ``pair_a, pair_b`` are frames t-1 and t of one pair clustering (a cell has one id in
    both); ``ref_a, ref_b`` the same frames of the reference. A pair cell takes the id of the
    reference cell it overlaps with IoU >= ``min_iou`` over both frames (one to one, best
    first); the others get new ids from ``next_id`` on. Used by the live preview, so a cell
    the new settings leave unchanged keeps its track's colour.

    Returns the relabelled ``(a, b)`` and the next unused id.
    """
    pair = np.stack([np.asarray(pair_a), np.asarray(pair_b)])
    ref = np.stack([np.asarray(ref_a), np.asarray(ref_b)])
    ia, ib, inter, size_a, size_b = overlap_table(pair, ref)
    iou = inter / (np.array([size_a[i] for i in ia.tolist()], float)
                   + np.array([size_b[i] for i in ib.tolist()], float) - inter)
    lut: dict[int, int] = {}
    used: set[int] = set()
    for k in np.argsort(-iou, kind="stable").tolist():
        if iou[k] < min_iou:
            break
        a, b = int(ia[k]), int(ib[k])
        if a not in lut and b not in used:
            lut[a] = b
            used.add(b)
    for a in sorted(size_a):
        if a not in lut:
            lut[a] = next_id
            next_id += 1
    keys = np.array([0] + list(lut), np.int64)
    values = np.array([0] + list(lut.values()), np.int64)
    order = np.argsort(keys)
    keys, values = keys[order], values[order]
    out = values[np.searchsorted(keys, pair.astype(np.int64))]
    return out[0], out[1], next_id
