"""HDBSCAN clustering of cosine embeddings on overlapping pairs of consecutive frames.

The model gives every pixel of a frame a unit-length embedding ``emb`` of shape ``(d, Y, X)``.
Background pixels point along ``e_0 = (1, 0, ..., 0)``, so ``emb[0] < fg_threshold`` is the
foreground. Cells point in directions roughly orthogonal to ``e_0`` and to their neighbours;
far-apart cells may share a direction, so the clustering features also contain the pixel
coordinates, scaled by ``1 / coord_scale``.

Frames ``t - 1`` and ``t`` are clustered *together* with the same coordinates for both, so a
cell is a single cluster across the pair and its two masks share an id (that is what the
tracker links frames with).

Speed: HDBSCAN's cost is building the single-linkage tree (the minimum spanning tree of the
mutual-reachability graph). We therefore

* cluster a regular grid of foreground pixels (``grid_step``; coarser automatically when the
  grid would exceed ``max_points``) and give every other foreground pixel the label of the
  embedding-wise closest clustered grid point within two grid steps;
* cache, per pair, the features and that assignment (they depend on ``fg_threshold``,
  ``coord_scale``, ``grid_step``, ``max_points``, ``smoothing``, ...) and the single-linkage
  tree (depends on those plus ``min_samples``); a change of ``min_cluster_size`` or
  ``min_object_size`` only re-runs the cheap tree condensation and cluster extraction of
  ``fast_hdbscan.cluster_trees`` and the split into connected pieces.

Clusters are finally split into connected pieces per frame (pieces under
``min_object_size`` pixels are dropped), so a cluster that happens to hold two separate
cells still gives two instances; pieces of one cluster in the two frames are reported as
``links``.

On a 512x512 pair at 25 % foreground (``benchmarks/bench_cluster.py``), the grid (about 8k
points) is as accurate as clustering all 125k foreground pixels, whose tree alone takes
~30-50 s.

Public API: :class:`ClusterParams`, :func:`foreground`, :class:`PairResult`,
:class:`PairClustering`, :func:`cluster_pair`, :func:`instance_confidence`,
:func:`synthetic_embeddings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace

import numpy as np
from scipy import ndimage as ndi

from .paramspec import param

__all__ = [
    "ClusterParams",
    "PairResult",
    "PairClustering",
    "foreground",
    "cluster_pair",
    "synthetic_embeddings",
    "instance_confidence",
    "BACKENDS",
]

BACKENDS = ("hdbscan", "fast_hdbscan")

# Half-width, in grid steps, of the window of clustered grid points a pixel may take its label
# from: 2 reaches past a ring of HDBSCAN noise points at cell borders.
_ASSIGN_RADIUS = 2


@dataclass(frozen=True)
class ClusterParams:
    """Parameters of the pair clustering.

    Attributes
    ----------
    min_samples : int
        HDBSCAN ``min_samples`` (m_pts): neighbours, on the clustering grid, that define a
        point's core distance. Larger smooths more and labels more border points as noise.
        Changing it rebuilds the single-linkage tree (about a second for a 512x512 pair).
    min_cluster_size : int
        Smallest cluster, in **full-resolution pixels of the pair** (both frames together;
        a cell present in both frames counts twice). Converted to grid points as
        ``max(2, round(min_cluster_size / step**2))``, so its meaning does not change when
        ``grid_step`` or ``max_points`` change the grid. Changing it only re-labels (ms).
    coord_scale : float
        Length in pixels that weighs as much as a unit of embedding distance: coordinates enter
        the features as ``(y, x) / coord_scale``. Two orthogonal cell directions are
        ``sqrt(2)`` apart. The default 45 px (two to three cell diameters at the model's
        pixel scale, where cells are 15-30 px wide) keeps a cell compact in feature space, so
        adjacent cells are told apart by their embeddings and a cell is not split along its
        length, while two cells with the same direction some 60 px or more apart (e.g. one in
        each frame of the pair) are as far apart as two orthogonal directions and are not
        linked. On synthetic movies 45-60 px gave the best segmentation and the fewest id
        switches; 30 px split and swapped cells more often. Smaller values weigh position
        more (and build the tree a little faster); much larger ones risk linking
        unrelated same-direction cells across the pair.
    fg_threshold : float
        A pixel is foreground where ``emb[0] < fg_threshold`` (cosine with the background
        direction), in (-1, 1].
    min_object_size : int
        Connected pieces of a cluster smaller than this many pixels (per frame) are dropped.
    grid_step : int
        Cluster only the foreground pixels with ``y % step == 0 and x % step == 0``.
    max_points : int or None
        Upper bound on the clustered grid points of a pair; the step grows until the grid fits.
        ``None``: no bound (slow for big frames).
    drop_background_component : bool
        Use ``emb[1:]`` re-normalised to unit length instead of the whole embedding: how much
        a pixel leans to the background says nothing about which cell it belongs to.
    max_assign_distance : float
        A pixel takes the label of a clustered grid point only if their embeddings are closer
        than this (Euclidean distance of the embedding features; ``sqrt(2)`` = orthogonal).
    smoothing : float
        Sigma (px) of a Gaussian smoothing of the embeddings over foreground pixels before
        clustering (background never leaks in); it averages out pixel noise so that cells
        stand out as denser regions. 0 disables it.
    backend : str
        Library that builds the single-linkage tree: ``"hdbscan"`` (faster on 2 cores) or
        ``"fast_hdbscan"``. Both give the same tree up to ties.
    shrink : int
        Pixels (movie resolution) taken off every mask's border once the labels are back at
        the movie's resolution: the model's foreground runs a little wide of the outlines
        annotators draw. Chosen per model by ``tune``; no effect on the clustering itself.
    """

    # The settings a user tunes carry their label, help and range (core.paramspec): the
    # widget's rows and the command line's flags are built from them.
    min_samples: int = param(
        8, "Smoothing (m_pts)",
        "How many neighbouring pixels must agree before a pixel counts as part of a cell. "
        "Higher: smoother cells and fewer specks, but small or thin cells may vanish. "
        "Lower: keeps small cells, but cells may break into fragments.",
        minimum=1, maximum=200, step=1)
    min_cluster_size: int = param(
        50, "Cluster size (pixels)",
        "The fewest pixels the clustering (HDBSCAN) accepts as one cell, counted over the two "
        "frames of a pair (a cell seen in both counts twice), in the model's pixels. "
        "Too low: specks of debris become cells. Too high: small cells are missed, and the "
        "clustering may then cut large cells into pieces instead: more cells, not fewer. "
        "To drop small objects only, use 'Drop pieces under'.",
        minimum=2, maximum=1_000_000, step=10)
    coord_scale: float = param(
        45.0, "Position scale (pixels)",
        "How far apart two pixels must be for their distance to count as much as the "
        "network's colours, in the model's pixels (where cells are about 30 pixels across "
        "once 'Resize frames by' is right). About one to two cell diameters. "
        "Smaller: cells are told apart more by position (large cells may be split). "
        "Larger: the network's colours decide more (touching look-alike cells may merge).",
        minimum=1.0, maximum=1000.0, step=1.0)
    fg_threshold: float = param(
        0.5, "Cell vs background",
        "Which pixels count as cell rather than background. "
        "Higher: more pixels count as cell (bigger masks, faint cells kept). "
        "Lower: only pixels the network is sure about (tighter masks).",
        minimum=-0.95, maximum=1.0, step=0.05)
    min_object_size: int = param(
        30, "Drop pieces under (pixels)",
        "Objects and detached bits of a cell smaller than this (in one frame, in the model's "
        "pixels) are removed. Raising it only ever removes objects.",
        minimum=0, maximum=1_000_000, step=5)
    grid_step: int = 2
    max_points: int | None = 10000
    drop_background_component: bool = True
    max_assign_distance: float = 0.8
    smoothing: float = 1.0
    backend: str = "hdbscan"
    shrink: int = 0

    def __post_init__(self):
        def _int(name, lo):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(
                    f"ClusterParams.{name} must be an integer >= {lo}, got {v!r}."
                )

        _int("min_samples", 1)
        _int("min_cluster_size", 2)
        _int("min_object_size", 0)
        _int("shrink", 0)
        _int("grid_step", 1)
        if self.max_points is not None:
            _int("max_points", 16)
        v = self.smoothing
        if not isinstance(v, (int, float, np.floating, np.integer)) or not (
            np.isfinite(v) and v >= 0
        ):
            raise ValueError(
                f"ClusterParams.smoothing must be a finite number >= 0, got {v!r}."
            )
        for name in ("coord_scale", "max_assign_distance"):
            v = getattr(self, name)
            if not isinstance(v, (int, float, np.floating, np.integer)) or not (
                np.isfinite(v) and v > 0
            ):
                raise ValueError(f"ClusterParams.{name} must be a finite number > 0, got {v!r}.")
        v = self.fg_threshold
        if not isinstance(v, (int, float, np.floating, np.integer)) or not (-1.0 < v <= 1.0):
            raise ValueError(
                f"ClusterParams.fg_threshold must lie in (-1, 1] (cosine with the background "
                f"direction), got {v!r}."
            )
        if self.backend not in BACKENDS:
            raise ValueError(
                f"ClusterParams.backend must be one of {BACKENDS}, got {self.backend!r}."
            )

    # Which cache level a parameter invalidates.
    _FEATURE_KEYS = ("coord_scale", "fg_threshold", "grid_step", "max_points",
                     "drop_background_component", "max_assign_distance", "smoothing")
    _TREE_KEYS = _FEATURE_KEYS + ("min_samples", "backend")

    def _key(self, names):
        return tuple(getattr(self, n) for n in names)


@dataclass
class PairResult:
    """Instances of one frame pair.

    Attributes
    ----------
    labels_a, labels_b : ndarray, int32, shape (Y, X)
        Instances of the first and second frame, 0 = background. An id present in both frames
        is the same cell (one cluster, one connected piece in each frame).
    links : ndarray, int64, shape (K, 2)
        ``(id_a, id_b)`` for every piece of frame a and piece of frame b that belong to the
        same cluster (includes the shared ids; a cluster with two pieces in frame b, e.g. a
        division, gives two rows).
    prob_a, prob_b : ndarray, float32, shape (Y, X)
        HDBSCAN membership strength in [0, 1] of each pixel's cluster (0 on background);
        low mean values flag doubtful cells.
    n_points : int
        Grid points clustered.
    step : int
        Grid step used.
    """

    labels_a: np.ndarray
    labels_b: np.ndarray
    links: np.ndarray
    prob_a: np.ndarray
    prob_b: np.ndarray
    n_points: int = 0
    step: int = 1

    def __iter__(self):
        # Lets ``labels_a, labels_b = result`` work like the plain tuple contract.
        return iter((self.labels_a, self.labels_b))


def _check_emb(emb, name="emb"):
    emb = np.asarray(emb)
    if emb.ndim != 3:
        raise ValueError(
            f"{name} must have shape (d, Y, X) (embedding components first), got shape "
            f"{emb.shape}."
        )
    if emb.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 embedding components, got {emb.shape[0]}.")
    if not np.issubdtype(emb.dtype, np.floating):
        raise ValueError(f"{name} must be a float array, got dtype {emb.dtype}.")
    return emb


def foreground(emb: np.ndarray, fg_threshold: float = 0.5) -> np.ndarray:
    """Foreground mask ``emb[0] < fg_threshold`` of an embedding ``(d, Y, X)``; bool (Y, X)."""
    emb = _check_emb(emb)
    return emb[0] < fg_threshold


def _smooth_foreground(emb, mask, sigma):
    """Gaussian-smooth the embedding over foreground pixels only (normalised convolution)."""
    w = ndi.gaussian_filter(mask.astype(np.float32), sigma, truncate=2.5)
    out = ndi.gaussian_filter((emb * mask).astype(np.float32), (0, sigma, sigma),
                              truncate=2.5) / np.maximum(w, 1e-6)
    return np.where(mask, out, emb).astype(np.float32)


def _embedding_features(emb, ys, xs, drop_bg):
    e = emb[:, ys, xs].T.astype(np.float64)
    if drop_bg:
        e = e[:, 1:]
        n = np.linalg.norm(e, axis=1, keepdims=True)
        e /= np.maximum(n, 1e-6)
    return e


class _Grid:
    """Features of the clustered grid points and the pixel-to-grid-point assignment."""

    def __init__(self, embs, p: ClusterParams):
        self.shape = embs[0].shape[1:]
        Y, X = self.shape
        masks = [e[0] < p.fg_threshold for e in embs]
        if p.smoothing > 0:
            embs = [_smooth_foreground(e, m, p.smoothing) for e, m in zip(embs, masks)]
        # Coarsen the grid until it fits max_points.
        step = p.grid_step
        while True:
            n = sum(int(m[::step, ::step].sum()) for m in masks)
            if p.max_points is None or n <= p.max_points or step >= max(Y, X):
                break
            step += 1
        self.step = step
        gY, gX = -(-Y // step), -(-X // step)
        # grid_index[f, gy, gx]: index of the grid point in the feature matrix, -1 if none.
        self.grid_index = np.full((2, gY, gX), -1, np.int64)
        feats, off = [], 0
        for f, (e, m) in enumerate(zip(embs, masks)):
            gm = m[::step, ::step]
            gy, gx = np.nonzero(gm)
            self.grid_index[f, gy, gx] = off + np.arange(gy.size)
            off += gy.size
            ys, xs = gy * step, gx * step
            ef = _embedding_features(e, ys, xs, p.drop_background_component)
            feats.append(np.hstack([ef, np.stack([ys, xs], 1) / p.coord_scale]))
        self.features = np.ascontiguousarray(np.vstack(feats))
        self.n_points = off
        # Candidate grid points of each foreground pixel, sorted by embedding distance.
        r = _ASSIGN_RADIUS
        offs = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)]
        self.pix = []  # per frame: (ys, xs, cand (n, k) sorted, -1 = none)
        nd = self.features.shape[1] - 2
        # Grid embeddings in float32 plus a far-away dummy row that index -1 picks.
        G = np.vstack([self.features[:, :nd], np.full((1, nd), 1e3)]).astype(np.float32)
        max_d2 = np.float32(p.max_assign_distance**2)
        for f, (e, m) in enumerate(zip(embs, masks)):
            ys, xs = np.nonzero(m)
            ef = _embedding_features(e, ys, xs, p.drop_background_component).astype(np.float32)
            gy0 = np.rint(ys / step).astype(np.int64)
            gx0 = np.rint(xs / step).astype(np.int64)
            # Padded grid index: no bounds checks for the window offsets (rounding may
            # also land one grid step past the last row/column).
            gpad = np.pad(self.grid_index[f], ((r, r + 1), (r, r + 1)), constant_values=-1)
            cand = np.empty((ys.size, len(offs)), np.int64)
            dist = np.empty((ys.size, len(offs)), np.float32)
            for k, (dy, dx) in enumerate(offs):
                idx = gpad[gy0 + (dy + r), gx0 + (dx + r)]
                diff = ef - G[idx]
                d2 = np.einsum("ij,ij->i", diff, diff)
                far = d2 >= max_d2
                idx[far] = -1
                cand[:, k] = idx
                # Spatial distance (in grid steps) breaks ties between equal embeddings.
                d2 += np.float32(1e-4) * ((ys - (gy0 + dy) * step) ** 2
                                          + (xs - (gx0 + dx) * step) ** 2) / step**2
                d2[far] = np.inf
                dist[:, k] = d2
            order = np.argsort(dist, axis=1, kind="stable")
            cand = np.take_along_axis(cand, order, 1)
            # Keep only as many columns as some pixel needs.
            used = (cand >= 0).any(0)
            kmax = int(np.flatnonzero(used).max()) + 1 if used.any() else 1
            self.pix.append((ys, xs, np.ascontiguousarray(cand[:, :kmax], dtype=np.int32)))


def _single_linkage(features, min_samples, backend):
    """Scipy-style single-linkage matrix (n-1, 4) of the mutual-reachability MST."""
    n = features.shape[0]
    ms = int(min(min_samples, n - 1))
    if backend == "hdbscan":
        try:
            from hdbscan.hdbscan_ import _hdbscan_boruvka_kdtree

            slt, _ = _hdbscan_boruvka_kdtree(
                features, min_samples=ms, core_dist_n_jobs=os.cpu_count() or 1
            )
        except ImportError:  # private helper moved: fall back to the public estimator
            import hdbscan

            est = hdbscan.HDBSCAN(min_samples=ms, min_cluster_size=2).fit(features)
            slt = est.single_linkage_tree_.to_numpy()
    else:
        from fast_hdbscan.cluster_trees import mst_to_linkage_tree
        from fast_hdbscan.hdbscan import compute_minimum_spanning_tree

        mst, _, _ = compute_minimum_spanning_tree(features, min_samples=ms)
        mst = mst[np.lexsort((mst.T[1], mst.T[0], mst.T[2]))]
        slt = mst_to_linkage_tree(mst)
    return np.ascontiguousarray(slt, dtype=np.float64)


def _labels_from_tree(slt, n, min_cluster_size):
    """EOM cluster labels (-1 noise) and membership strengths from a single-linkage tree."""
    from fast_hdbscan.cluster_trees import (
        cluster_tree_from_condensed_tree,
        condense_tree,
        extract_eom_clusters,
        get_cluster_label_vector,
        get_point_membership_strength_vector,
    )

    ct = condense_tree(slt, min_cluster_size=int(min_cluster_size))
    tree = cluster_tree_from_condensed_tree(ct)
    sel = extract_eom_clusters(ct, tree, allow_single_cluster=False)
    if len(sel) == 0:
        return np.full(n, -1, np.int64), np.zeros(n, np.float32)
    labels = get_cluster_label_vector(ct, sel, 0.0, n).astype(np.int64)
    strength = get_point_membership_strength_vector(ct, sel, labels)
    return labels, np.asarray(strength, np.float32)


class PairClustering:
    """HDBSCAN clustering of one pair of frames, with caches for live parameter tuning.

    Parameters
    ----------
    emb_a, emb_b : ndarray, float, shape (d, Y, X)
        Unit-length embeddings of frames ``t - 1`` and ``t``.
    params : ClusterParams, optional
    tree_process : TreeProcess, optional
        Build the single-linkage tree in this child process (see
        :mod:`~napari_cosine_tracker.core.treeproc`): the calling process's other threads (a
        GUI) keep running, and :meth:`prefetch` lets the caller work while it is built.

    Examples
    --------
    >>> pc = PairClustering(emb_prev, emb_cur)          # doctest: +SKIP
    >>> res = pc.run()                                    # builds the tree
    >>> res = pc.run(min_cluster_size=300)                # re-labels from the cached tree
    """

    def __init__(self, emb_a, emb_b, params: ClusterParams | None = None, tree_process=None):
        emb_a = _check_emb(emb_a, "emb_a")
        emb_b = _check_emb(emb_b, "emb_b")
        if emb_a.shape != emb_b.shape:
            raise ValueError(
                f"emb_a and emb_b must have the same shape (d, Y, X), got {emb_a.shape} "
                f"and {emb_b.shape}."
            )
        self._embs = (emb_a, emb_b)
        self.params = params if params is not None else ClusterParams()
        if not isinstance(self.params, ClusterParams):
            raise TypeError(f"params must be a ClusterParams, got {type(params).__name__}.")
        self._grid = None
        self._grid_key = None
        self._tree = None
        self._tree_key = None
        self._pending = None  # (tree key, pending tree) from prefetch()
        self.tree_process = tree_process
        self.timings: dict[str, float] = {}

    def _build_tree(self, p: ClusterParams):
        g = self._grid
        if g.n_points <= max(2, p.min_samples):
            return None
        if self.tree_process is not None:
            from .treeproc import TreeProcessDied

            try:
                return self.tree_process.build(g.features, p.min_samples, p.backend)
            except TreeProcessDied as e:  # e.g. a frozen app that cannot run `python -m`
                import warnings

                warnings.warn(f"HDBSCAN runs in this process instead: {e}", RuntimeWarning,
                              stacklevel=2)
                self.tree_process = None
        return _single_linkage(g.features, p.min_samples, p.backend)

    def prefetch(self, params: ClusterParams | None = None) -> None:
        """Start building the tree for ``params`` in :attr:`tree_process` and return at once,
        so the caller can work (e.g. run the model on the next frame) meanwhile; the next
        :meth:`run` with these parameters picks the tree up."""
        p = params if params is not None else self.params
        if self.tree_process is None:
            return
        self._ensure_grid(p)
        k = p._key(ClusterParams._TREE_KEYS)
        if self._tree_key == k or self._grid.n_points <= max(2, p.min_samples):
            return
        self._pending = (k, self.tree_process.submit(self._grid.features, p.min_samples, p.backend))

    def _ensure_grid(self, p: ClusterParams):
        import time

        k = p._key(ClusterParams._FEATURE_KEYS)
        if self._grid_key != k:
            t0 = time.perf_counter()
            self._grid = _Grid(self._embs, p)
            self._grid_key = k
            self._tree_key = None
            self._pending = None
            self.timings["features"] = time.perf_counter() - t0

    def _ensure(self, p: ClusterParams):
        import time

        self._ensure_grid(p)
        k = p._key(ClusterParams._TREE_KEYS)
        if self._tree_key != k:
            t0 = time.perf_counter()
            pending, self._pending = self._pending, None
            if pending is not None and pending[0] == k:
                from .treeproc import TreeProcessDied

                try:
                    self._tree = pending[1].result()
                except TreeProcessDied:  # build again (restarts the child, or runs here)
                    self._tree = self._build_tree(p)
            else:
                self._tree = self._build_tree(p)
            self._tree_key = k
            self.timings["tree"] = time.perf_counter() - t0

    def run(self, params: ClusterParams | None = None, **changes) -> PairResult:
        """Cluster the pair, re-using every cache the new parameters allow.

        When HDBSCAN's excess-of-mass selection finds no cluster at all (e.g. a single cell in
        the pair), every clustered point forms one cluster, which is then split into
        connected pieces.

        Parameters
        ----------
        params : ClusterParams, optional
            Replaces the current parameters.
        **changes
            Individual fields to change, e.g. ``min_cluster_size=300``.
        """
        import time

        p = params if params is not None else self.params
        if changes:
            unknown = set(changes) - {f.name for f in fields(ClusterParams)}
            if unknown:
                raise TypeError(f"unknown ClusterParams field(s): {sorted(unknown)}")
            p = replace(p, **changes)
        if not isinstance(p, ClusterParams):
            raise TypeError(f"params must be a ClusterParams, got {type(p).__name__}.")
        self.params = p
        self._ensure(p)
        t0 = time.perf_counter()
        g = self._grid
        n = g.n_points
        mcs = max(2, int(round(p.min_cluster_size / g.step**2)))
        if self._tree is not None:
            lab, strength = _labels_from_tree(self._tree, n, mcs)
            if (lab < 0).all():
                # Nothing stands out (e.g. a single cell): one cluster, split into pieces below.
                lab[:] = 0
                strength[:] = 1.0
        else:
            lab, strength = np.zeros(n, np.int64), np.ones(n, np.float32)
        res = self._assemble(lab, strength, p)
        self.timings["relabel"] = time.perf_counter() - t0
        return res

    def _assemble(self, lab, strength, p):
        g = self._grid
        Y, X = g.shape
        clus, probs = [], []
        for ys, xs, cand in g.pix:
            # Closest-embedding candidate that is not noise; most pixels take the first one,
            # so only the rest walk down their candidate list.
            best = cand[:, 0].copy()
            c = np.where(best >= 0, lab[np.maximum(best, 0)], -1)
            todo = np.flatnonzero(c < 0)
            for k in range(1, cand.shape[1]):
                if todo.size == 0:
                    break
                ck = cand[todo, k]
                lk = np.where(ck >= 0, lab[np.maximum(ck, 0)], -1)
                hit = lk >= 0
                c[todo[hit]] = lk[hit]
                best[todo[hit]] = ck[hit]
                todo = todo[~hit]
            pr = np.where(c >= 0, strength[np.maximum(best, 0)], 0).astype(np.float32)
            clus.append((ys, xs, c + 1))
            probs.append(pr)
        return _pieces_to_pair((Y, X), clus, probs, p.min_object_size,
                               n_points=g.n_points, step=g.step)


def _pieces(shape, ys, xs, cl, min_size):
    """Split the clusters of the foreground pixels ``(ys, xs)`` (``cl`` = cluster + 1,
    0 = none) into connected pieces; returns each pixel's piece and, per piece, its cluster
    and whether it is kept. Works on the foreground pixels, not the whole frame."""
    from skimage.measure import label as cc_label

    img = np.zeros(shape, np.int32)
    img[ys, xs] = cl
    comp = cc_label(img, background=0, connectivity=1)[ys, xs]
    nc = int(comp.max()) if comp.size else 0
    sizes = np.bincount(comp, minlength=nc + 1)
    cl_of = np.zeros(nc + 1, np.int64)
    cl_of[comp] = cl
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    return comp, cl_of, keep


def _pieces_to_pair(shape, clus, probs, min_object_size, n_points=0, step=1):
    (ya, xa, ca), (yb, xb, cb) = clus
    comp_a, cla, keep_a = _pieces(shape, ya, xa, ca, min_object_size)
    comp_b, clb, keep_b = _pieces(shape, yb, xb, cb, min_object_size)
    ids_a = np.flatnonzero(keep_a)
    ids_b = np.flatnonzero(keep_b)
    # Group kept pieces by cluster.
    by_cl: dict[int, tuple[list, list]] = {}
    for c in ids_a.tolist():
        by_cl.setdefault(int(cla[c]), ([], []))[0].append(c)
    for c in ids_b.tolist():
        by_cl.setdefault(int(clb[c]), ([], []))[1].append(c)
    new_a = np.zeros(keep_a.size, np.int32)
    new_b = np.zeros(keep_b.size, np.int32)
    links = []
    nxt = 1
    for cl in sorted(by_cl):
        pa, pb = by_cl[cl]
        if len(pa) <= 1 and len(pb) <= 1:
            # One piece per frame: the shared id says "same cell".
            for c in pa:
                new_a[c] = nxt
            for c in pb:
                new_b[c] = nxt
            if pa and pb:
                links.append((nxt, nxt))
            nxt += 1
            continue
        ia = []
        for c in pa:
            new_a[c] = nxt
            ia.append(nxt)
            nxt += 1
        ib = []
        for c in pb:
            new_b[c] = nxt
            ib.append(nxt)
            nxt += 1
        links.extend((a, b) for a in ia for b in ib)
    out = []
    for ys, xs, comp, new, pr in ((ya, xa, comp_a, new_a, probs[0]),
                                  (yb, xb, comp_b, new_b, probs[1])):
        lab = np.zeros(shape, np.int32)
        pim = np.zeros(shape, np.float32)
        v = new[comp]
        lab[ys, xs] = v
        pim[ys, xs] = np.where(v > 0, pr, 0)
        out += [lab, pim]
    return PairResult(
        labels_a=out[0],
        labels_b=out[2],
        links=np.asarray(links, np.int64).reshape(-1, 2),
        prob_a=out[1],
        prob_b=out[3],
        n_points=int(n_points),
        step=int(step),
    )


def instance_confidence(labels: np.ndarray, prob: np.ndarray) -> dict[int, float]:
    """Mean HDBSCAN membership strength of every instance: ``{id: value in [0, 1]}``.

    Low values mark doubtful cells (clustered weakly, or mostly from pixels assigned after
    the clustering); sort by value for a review list.
    """
    labels = np.asarray(labels)
    prob = np.asarray(prob)
    if labels.shape != prob.shape:
        raise ValueError(f"labels {labels.shape} and prob {prob.shape} differ in shape.")
    lab = labels.ravel().astype(np.int64)
    fg = lab > 0
    sums = np.bincount(lab[fg], weights=prob.ravel()[fg])
    counts = np.bincount(lab[fg], minlength=sums.size)
    ids = np.flatnonzero(counts)
    return {int(i): float(sums[i] / counts[i]) for i in ids}


def cluster_pair(emb_a, emb_b, params: ClusterParams | None = None, **changes) -> PairResult:
    """Cluster one frame pair from scratch (see :class:`PairClustering` for live tuning)."""
    return PairClustering(emb_a, emb_b, params).run(**changes)


def synthetic_embeddings(
    labels,
    dim: int = 16,
    *,
    noise: float = 0.1,
    variation: float = 0.15,
    blur: float = 1.0,
    neighbour_distance: float = 6.0,
    seed: int = 0,
) -> np.ndarray:
    """Embeddings a trained model might give for ground-truth labels (for tests/benchmarks).

    Every label id gets a random unit direction orthogonal to ``e_0`` (the same in every
    frame; daughters get new directions), chosen, like the loss asks, as far from the
    directions of cells within ``neighbour_distance`` px as random candidates allow; cells
    further apart may share directions. Background gets ``e_0``. A smooth random field
    (within-cell variation), a Gaussian blur (mixing at borders, like a CNN) and pixel noise
    are added before normalising each pixel to unit length.

    Parameters
    ----------
    labels : ndarray of int, shape (T, Y, X) or (Y, X)
    dim : int
        Embedding size ``d``.
    noise, variation : float
        Standard deviations of the per-pixel noise and of the smooth within-cell field.
    blur : float
        Sigma (px) of the spatial blur.
    neighbour_distance : float
        Cells closer than this (in any frame) count as neighbours.
    seed : int

    Returns
    -------
    ndarray, float32, shape (T, d, Y, X) (or (d, Y, X) for one frame)
    """
    lab = np.asarray(labels)
    single = lab.ndim == 2
    if single:
        lab = lab[None]
    if lab.ndim != 3:
        raise ValueError(f"labels must have shape (T, Y, X) or (Y, X), got {lab.shape}.")
    if int(dim) < 3:
        raise ValueError(f"dim must be >= 3, got {dim}.")
    rng = np.random.default_rng(seed)
    dirs = _neighbour_aware_directions(lab, int(dim), rng, neighbour_distance)
    T, Y, X = lab.shape
    out = np.empty((T, dim, Y, X), np.float32)
    for t in range(T):
        e = dirs[lab[t]].transpose(2, 0, 1)  # (d, Y, X)
        if variation > 0:
            coarse = rng.normal(scale=variation, size=(dim, Y // 16 + 2, X // 16 + 2))
            smooth = ndi.zoom(coarse, (1, (Y + 1) / coarse.shape[1], (X + 1) / coarse.shape[2]),
                              order=1)[:, :Y, :X]
            smooth[0] = 0
            e = e + smooth * (lab[t] > 0)
        if blur > 0:
            e = ndi.gaussian_filter(e, (0, blur, blur))
        if noise > 0:
            e = e + rng.normal(scale=noise, size=e.shape)
        e /= np.maximum(np.linalg.norm(e, axis=0, keepdims=True), 1e-6)
        out[t] = e
    return out[0] if single else out


def _neighbour_aware_directions(lab, dim, rng, neighbour_distance, n_candidates=64):
    """Unit directions orthogonal to e_0, one per id, far from those of neighbouring ids."""
    n_ids = int(lab.max()) + 1
    r = max(int(np.ceil(neighbour_distance)), 1)
    nb: dict[int, set] = {}
    for frame in lab:
        grown = ndi.grey_dilation(frame, size=(2 * r + 1, 2 * r + 1))
        # Pairs (id, neighbouring id) where one id's grown mask reaches the other.
        m = (frame > 0) & (grown > 0) & (grown != frame)
        for a, b in set(zip(frame[m].tolist(), grown[m].tolist())):
            nb.setdefault(a, set()).add(b)
            nb.setdefault(b, set()).add(a)
        # grey_dilation keeps the maximum id only; repeat with inverted ids for the minimum.
        inv = np.where(frame > 0, n_ids - frame, 0)
        grown = ndi.grey_dilation(inv, size=(2 * r + 1, 2 * r + 1))
        m = (frame > 0) & (grown > 0) & (grown != inv)
        for a, b in set(zip(frame[m].tolist(), (n_ids - grown[m]).tolist())):
            nb.setdefault(a, set()).add(b)
            nb.setdefault(b, set()).add(a)
    dirs = np.zeros((n_ids, dim))
    dirs[0, 0] = 1
    done = np.zeros(n_ids, bool)
    for i in range(1, n_ids):
        cand = rng.normal(size=(n_candidates, dim))
        cand[:, 0] = 0
        cand /= np.linalg.norm(cand, axis=1, keepdims=True)
        prev = [j for j in nb.get(i, ()) if done[j]]
        if prev:
            worst = np.abs(cand @ dirs[prev].T).max(1)
            dirs[i] = cand[np.argmin(worst)]
        else:
            dirs[i] = cand[0]
        done[i] = True
    return dirs
