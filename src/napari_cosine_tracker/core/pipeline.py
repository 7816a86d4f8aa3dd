"""The whole method in one place: recurrent embeddings → pair clustering → IoU tracking.

Two front doors:

* :func:`track_movie` streams a movie once (CLI, batch, scripts). Memory stays flat with
  movie length: only the previous frame's embeddings are kept, and with ``store_dir`` the
  tracked frames go to disk as they become final.
* :class:`TrackingSession` keeps every frame's embeddings and each pair's clustering cache so
  a GUI can pause/resume the model, show an embedding overlay, re-cluster a frame pair live
  while a parameter changes, and re-track the movie without re-running the network.

Clustering and tracking run at the model's pixel scale; labels go back to the movie's
resolution with a foreground mask from the bilinearly upsampled background component, so
cell outlines are smooth rather than blocky.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import buffers
from .buffers import label_buffer
from .cluster import ClusterParams, PairClustering
from .inference import WARMUP_FRAMES, EmbeddingStream
from .io import as_movie
from .track import Tracker, TrackParams, _compact

__all__ = ["TrackResult", "TrackingSession", "track_movie", "default_params"]


@dataclass
class TrackResult:
    """Tracked labels (T, Y, X) of track ids and the lineage ``id, first, last, parent``."""

    labels: object  # (T, Y, X) array, or a lazy stack with the same indexing
    lineage: np.ndarray
    timings: dict | None = None


def default_params(config: dict | None) -> tuple[ClusterParams, TrackParams]:
    """Clustering and tracking defaults recommended by a model's ``config.json``."""
    config = config or {}

    def build(cls, section):
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in (config.get(section) or {}).items() if k in known}
        return cls(**values)

    return build(ClusterParams, "clustering"), build(TrackParams, "tracking")


def shrink_labels(labels: np.ndarray, px: int) -> np.ndarray:
    """Take ``px`` pixels off the border of every mask (where it meets background or another
    mask); a mask that would vanish is kept whole, so no cell disappears from a frame."""
    if px <= 0 or not labels.any():
        return labels
    from scipy import ndimage as ndi

    out = labels
    for _ in range(int(px)):
        out = out * (ndi.minimum_filter(out, 3) == ndi.maximum_filter(out, 3))
    lost = np.setdiff1d(np.unique(labels), np.unique(out))
    if lost.size:
        out = np.where(np.isin(labels, lost), labels, out)
    return out.astype(labels.dtype, copy=False)


def upsample_labels(labels: np.ndarray, background: np.ndarray, shape, fg_threshold: float,
                    shrink: int = 0) -> np.ndarray:
    """Model-scale labels → movie resolution.

    ``background``: the embedding's background component at model scale; upsampled
    bilinearly it gives a smooth foreground mask, and every foreground pixel takes the label
    of the nearest labelled pixel (within a few pixels). ``shrink``: pixels then taken off
    every mask's border (see :func:`shrink_labels`).
    """
    if labels.shape == tuple(shape):
        return shrink_labels(labels, shrink)
    if not labels.any():  # no cells (e.g. an empty frame): skip the costly expansion
        return np.zeros(tuple(shape), labels.dtype)
    from skimage.segmentation import expand_labels

    from .preprocess import rescale_labels

    bg = torch.from_numpy(np.ascontiguousarray(background, np.float32))[None, None]
    fg = F.interpolate(bg, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy() < fg_threshold
    big = rescale_labels(labels, shape)
    factor = max(shape[0] / labels.shape[0], shape[1] / labels.shape[1])
    big = expand_labels(big, distance=max(1.0, factor)) * fg
    return shrink_labels(big.astype(labels.dtype, copy=False), shrink)


class _FrameStore:
    """Tracked frames in memory, or as .npy files when ``directory`` is given.

    ``lut`` renumbers ids in every frame; ``frame_luts`` (frame -> lookup table), when set,
    renumber each frame on its own (after global re-linking) and take precedence.
    """

    def __init__(self, n_frames, shape, directory=None):
        self.n_frames, self.shape, self.dir = n_frames, tuple(shape), directory
        self.frames = {} if directory is None else None
        self.lut = None
        self.frame_luts = None

    def put(self, t, frame):
        if self.dir is None:
            self.frames[t] = frame
        else:
            np.save(Path(self.dir) / f"{t:05d}.npy", frame)

    def _get(self, t):
        if self.dir is None:
            frame = self.frames.get(t)
            return np.zeros(self.shape, np.int32) if frame is None else frame
        path = Path(self.dir) / f"{t:05d}.npy"
        return np.load(path) if path.exists() else np.zeros(self.shape, np.int32)

    def frame(self, t):
        f = self._get(t)
        if self.frame_luts is not None:
            lut = self.frame_luts.get(t)
            return np.zeros_like(f) if lut is None else lut[f]
        return self.lut[f] if self.lut is not None else f

    def __len__(self):
        return self.n_frames

    def __getitem__(self, t):
        if isinstance(t, (int, np.integer)):
            return self.frame(int(t) % self.n_frames)
        return self.array()[t]

    def array(self):
        top = max((int(v.max()) for v in self.frame_luts.values() if v.size), default=0) \
            if self.frame_luts is not None else (None if self.lut is None else int(self.lut.max()))
        dtype = np.uint16 if top is None or top < 65535 else np.uint32
        out = np.zeros((self.n_frames,) + self.shape, dtype)
        for t in range(self.n_frames):
            out[t] = self.frame(t)
        return out


class _EmbeddingStore:
    """Each frame's embeddings (float16, model resolution): a dict in memory, or one .npy
    file per frame on disk with the last few frames cached (pairs read t-1 and t)."""

    CACHE = 4

    def __init__(self, directory=None):
        from collections import OrderedDict

        self.dir = Path(directory) if directory is not None else None
        self._mem: dict[int, np.ndarray] = {}
        self._cache: OrderedDict = OrderedDict()
        self._keys: list[int] = []

    def __setitem__(self, t, value):
        if self.dir is None:
            self._mem[t] = value
        else:
            np.save(self.dir / f"{t:06d}.npy", value)
            self._remember(t, value)
        if t not in self._keys:
            self._keys.append(t)

    def _remember(self, t, value):
        self._cache[t] = value
        self._cache.move_to_end(t)
        while len(self._cache) > self.CACHE:
            self._cache.popitem(last=False)

    def __getitem__(self, t):
        if self.dir is None:
            return self._mem[t]
        if t in self._cache:
            self._cache.move_to_end(t)
            return self._cache[t]
        if t not in self._keys:
            raise KeyError(t)
        value = np.load(self.dir / f"{t:06d}.npy")
        self._remember(t, value)
        return value

    def __contains__(self, t):
        return t in self._keys

    def __iter__(self):
        return iter(list(self._keys))

    def __len__(self):
        return len(self._keys)

    def clear(self):
        if self.dir is not None:
            for t in self._keys:
                (self.dir / f"{t:06d}.npy").unlink(missing_ok=True)
        self._mem.clear()
        self._cache.clear()
        self._keys.clear()


OWN_MASKS_MIN_DAUGHTER_FRAMES = 3  # see _Relinker


class _Relinker:
    """Collects the cells of every final frame (centroid, area, mean embedding) as the pair
    tracker hands frames over, then links them over the whole movie (:mod:`.link`).

    The pair tracker's own links (a cell clustered with itself in the next frame, and its
    two-daughter divisions) are kept as sure links: the clustering saw both frames' embeddings
    together, which tells more than centroids. The global assignment adds what chaining cannot:
    cells lost for a frame or two brought back, divisions whose daughters left their mother's
    footprint, and it drops "divisions" that are not either side of the mother.
    """

    def __init__(self, track_params: TrackParams):
        from .link import LinkParams

        # The model's own masks flicker: a nucleus cut in two for a frame or two read as a
        # division. Requiring daughters to live 3 frames took the SIM+ fold's false divisions
        # on SIM+/01 (never seen) from 70 to 48, TF 0.767 -> 0.788, BC(2) 0.337 -> 0.405
        # (docs/benchmarks.md, "Linking"). Masks a user gives keep every division (LinkParams'
        # default): on silver masks it cost DIC a true division (OP_CLB 0.876 -> 0.854).
        self.params = LinkParams(min_daughter_ratio=track_params.min_daughter_ratio,
                                 min_track_length=track_params.min_track_length,
                                 min_daughter_frames=OWN_MASKS_MIN_DAUGHTER_FRAMES)
        self.rows = []
        self.n_frames = 0

    def add(self, t: int, labels: np.ndarray, model_labels: np.ndarray, emb: np.ndarray) -> None:
        """Frame ``t``: its final labels at movie resolution and at model resolution with the
        frame's embeddings (for each cell's mean direction)."""
        from .link import _frame_cells

        self.n_frames = max(self.n_frames, t + 1)
        got = _frame_cells(t, labels, None)
        if got is None:
            return
        ids, y, x, area, _ = got
        small = _frame_cells(t, model_labels, emb[1:])
        e = np.zeros((ids.size, emb.shape[0] - 1))
        if small is not None:
            pos = {int(i): k for k, i in enumerate(small[0].tolist())}
            for k, i in enumerate(ids.tolist()):
                if i in pos:
                    e[k] = small[4][pos[i]]
        self.rows.append((np.full(ids.size, t), ids, y, x, area, e))

    _COLUMNS = ("frame", "label", "y", "x", "area", "embedding")

    def _table(self):
        """The cells collected so far as one :class:`~.link.CellTable` (None without cells)."""
        from .link import CellTable

        if not self.rows:
            return None
        cols = dict(zip(self._COLUMNS, (np.concatenate(c) for c in zip(*self.rows))))
        cols["label"] = cols["label"].astype(np.int64)
        return CellTable(**cols)

    def get_state(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the cells collected so far (for checkpoints)."""
        cells = self._table()
        if cells is None:
            return {}, {"n_frames": self.n_frames, "empty": True}
        return {k: getattr(cells, k) for k in self._COLUMNS}, {"n_frames": self.n_frames, "empty": False}

    def set_state(self, arrays: dict, meta: dict) -> None:
        self.n_frames = int(meta["n_frames"])
        self.rows = [] if meta["empty"] else [tuple(np.asarray(arrays[k]) for k in self._COLUMNS)]

    def finish(self, n_frames: int, pair_lineage: np.ndarray | None = None):
        """``(per-frame lookup tables, lineage)``; ``pair_lineage``: the pair tracker's
        ``id, first, last, parent`` rows for the ids the frames were handed over with."""
        from .link import link_cells

        n_frames = max(n_frames, self.n_frames)
        cells = self._table()
        if cells is None:
            return {}, np.zeros((0, 4), np.int64)
        index = {(int(t), int(i)): k for k, (t, i) in enumerate(zip(cells.frame, cells.label))}
        sure = [(k, index[(t + 1, i)]) for (t, i), k in index.items() if (t + 1, i) in index]
        if pair_lineage is not None and len(pair_lineage):
            rows = {int(r[0]): r for r in np.asarray(pair_lineage).tolist()}
            kids: dict[int, list[int]] = {}
            for i, b, _, par in rows.values():
                if par:
                    kids.setdefault(par, []).append(i)
            for par, ds in kids.items():
                last = rows[par][2]
                ends = [index.get((last, par)), *[index.get((last + 1, d)) for d in ds]]
                if len(ds) == 2 and None not in ends and all(rows[d][1] == last + 1 for d in ds):
                    sure += [(ends[0], ends[1]), (ends[0], ends[2])]
        track, lineage, _ = link_cells(cells, n_frames, self.params, np.asarray(sure, np.int64))
        luts = {}
        for t in range(n_frames):
            sel = cells.frame == t
            if sel.any():
                lut = np.zeros(int(cells.label[sel].max()) + 1, np.int64)
                lut[cells.label[sel]] = track[sel]
                luts[t] = lut
        return luts, lineage


def _finish(store: _FrameStore, lineage: np.ndarray, in_memory: bool, relinker: _Relinker | None = None):
    """Renumber track ids 1..N (in order of appearance) through a lookup table, or re-link
    the final cells over the whole movie."""
    if relinker is not None:
        store.frame_luts, lineage = relinker.finish(store.n_frames, lineage)
    elif lineage.size:
        lut, lineage = _compact(np.arange(int(lineage[:, 0].max()) + 1), lineage)
        store.lut = lut
    labels = store.array() if in_memory else store
    return labels, lineage


def track_movie(
    movie,
    model_dir=None,
    device="auto",
    params: ClusterParams | None = None,
    track_params: TrackParams | None = None,
    progress: Callable[[int, int], None] | None = None,
    store_dir=None,
    stream: EmbeddingStream | None = None,
    overlap: bool = False,
    warmup: int = WARMUP_FRAMES,
    checkpoint_dir=None,
    checkpoint_every: int = 25,
    resume: bool = False,
) -> TrackResult:
    """Segment and track every cell of a (T, Y, X) movie.

    Parameters
    ----------
    movie : array or Movie
        The movie, e.g. from :func:`~napari_cosine_tracker.core.io.read_movie`.
    model_dir : path, optional
        Model folder; default the shipped model. Its config supplies default parameters.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    params, track_params : optional
        Clustering and tracking parameters (default: the model's recommendations).
    progress : callable, optional
        Called as ``progress(frames_done, n_frames)``.
    store_dir : path, optional
        Keep tracked frames on disk there instead of in memory (flat memory for long movies);
        the result's ``labels`` is then a lazy stack.
    stream : EmbeddingStream, optional
        A loaded model to reuse (instead of ``model_dir``/``device``); it is reset first, so
        a run after an interrupted one gives the same result as a clean run.
    overlap : bool
        Build each pair's HDBSCAN tree in a child process while the model runs on the next
        frame (same result; worth it with a spare core, e.g. torch on N-1 of N cores).
    warmup : int
        Times frame 0 is run before it is labelled, to settle the recurrent state
        (:meth:`~napari_cosine_tracker.core.inference.EmbeddingStream.warm_up`); 0: none.
    checkpoint_dir : path, optional
        Write a checkpoint there every ``checkpoint_every`` frames (:mod:`.resume`), with the
        tracked frames beside it (``store_dir`` defaults to its ``frames/``).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` when there is one; the result is
        exactly that of an uninterrupted run. A checkpoint of other settings is refused.

    Returns
    -------
    TrackResult

    Examples
    --------
    >>> from napari_cosine_tracker.core.io import read_movie            # doctest: +SKIP
    >>> result = track_movie(read_movie("Fluo-N2DH-SIM+/02"))           # doctest: +SKIP
    >>> result.labels.shape, result.lineage[:3]                         # doctest: +SKIP
    """
    import time

    movie = as_movie(movie)
    stream = stream or EmbeddingStream(model_dir, device=device)
    stream.reset()  # a stream left mid-movie by an interrupted run must not leak its state
    p_default, tp_default = default_params(stream.config)
    params = params or p_default
    track_params = track_params or tp_default
    n = len(movie)
    shape = movie.shape[1:]
    lazy = store_dir is not None  # labels come back as a lazy stack only when asked for
    if checkpoint_dir is not None and store_dir is None:
        store_dir = Path(checkpoint_dir) / "frames"
    if store_dir is not None:
        Path(store_dir).mkdir(parents=True, exist_ok=True)
    store = _FrameStore(n, shape, store_dir)
    tracker = Tracker(track_params)
    relinker = _Relinker(track_params) if track_params.linker == "global" else None
    timings = {"model_s": 0.0, "cluster_s": 0.0, "track_s": 0.0}
    # Each frame's embeddings until the tracker hands the frame over (a few frames at most).
    kept: dict[int, np.ndarray] = {}
    prev = None

    def emit(frames):
        for t, lab in frames:
            emb_t = kept.pop(t)
            big = upsample_labels(lab, emb_t[0], shape, params.fg_threshold, params.shrink)
            store.put(t, big)
            if relinker is not None:
                relinker.add(t, big, lab, emb_t)

    tree_process = _tree_process(overlap)
    pending = None  # the pair whose tree the child process is building

    def finish_pair(pc):
        t1 = time.perf_counter()
        res = pc.run()
        t2 = time.perf_counter()
        emit(tracker.add_pair(res))
        timings["cluster_s"] += t2 - t1
        timings["track_s"] += time.perf_counter() - t2

    start = 0
    if checkpoint_dir is not None:
        from . import resume as ck

        key = ck.fingerprint(movie.shape, stream.config, stream.scale, params, track_params, warmup)
        state = ck.load_checkpoint(checkpoint_dir, key) if resume else None
        if state is not None:
            meta, arrays = state
            start = int(meta["next_frame"])
            stream.set_state({k: torch.from_numpy(np.array(v)) for k, v in ck.sub(arrays, "stream").items()})
            prev = arrays.get("prev")
            kept.update({int(t): arrays[f"kept/{t}"] for t in meta["kept"]})
            tracker.set_state(ck.sub(arrays, "tracker"), meta["tracker"])
            if relinker is not None:
                relinker.set_state(ck.sub(arrays, "relinker"), meta["relinker"])
            timings.update(meta["timings"])

    def checkpoint(next_frame):
        nonlocal pending
        if pending is not None:  # a checkpoint holds no half-built pair
            finish_pair(pending)
            pending = None
        ck.save_checkpoint(checkpoint_dir, next_frame=next_frame, fingerprint=key, stream=stream,
                           prev=prev, kept=kept, tracker=tracker, relinker=relinker, timings=timings)

    if warmup and start == 0:
        t0 = time.perf_counter()
        stream.warm_up(movie, warmup)
        timings["model_s"] += time.perf_counter() - t0
    for t in range(start, n):
        t0 = time.perf_counter()
        # Embeddings pass through float16 as in TrackingSession (which stores them so), so
        # the CLI and the GUI give identical results.
        emb = stream.push(movie[t]).astype(np.float16).astype(np.float32)
        timings["model_s"] += time.perf_counter() - t0
        kept[t] = emb
        if pending is not None:
            finish_pair(pending)
            pending = None
        if prev is not None:
            pc = PairClustering(prev, emb, params, tree_process=tree_process)
            if tree_process is not None:
                pc.prefetch()  # built while the model runs on the next frame
                pending = pc
            else:
                finish_pair(pc)
        prev = emb
        if checkpoint_dir is not None and (t + 1) % max(1, int(checkpoint_every)) == 0 and t + 1 < n:
            checkpoint(t + 1)
        if progress is not None:
            progress(t + 1, n)
    if pending is not None:
        finish_pair(pending)
    if n == 1:
        # A single frame: cluster it with itself so it still gets instances.
        emit(tracker.add_pair(PairClustering(prev, prev, params).run()))
        frames = tracker.finish()
        emit([f for f in frames if f[0] == 0])
    else:
        emit(tracker.finish())
    t_link = time.perf_counter()
    labels, lineage = _finish(store, tracker.lineage(), in_memory=not lazy, relinker=relinker)
    timings["track_s"] += time.perf_counter() - t_link
    if n == 1:
        lineage = lineage[lineage[:, 1] == 0]
        lineage[:, 2] = 0
    return TrackResult(labels, lineage, timings)


def _tree_process(use):
    """``True``: the process-wide tree process; ``False``/``None``: in-process; or an instance."""
    if use is True:
        from .treeproc import shared_tree_process

        return shared_tree_process()
    return use or None


class TrackingSession:
    """One movie's interactive run, for the GUI (see the module docstring).

    Parameters
    ----------
    movie : array or Movie
    model_dir : path, optional
    device : str
    params : ClusterParams, optional
    track_params : TrackParams, optional
    tree_process : bool or TreeProcess
        Build HDBSCAN trees in a child process (default): their Cython/numba code holds the
        GIL for up to a second per pair, which in-process would freeze a GUI's event loop.
    scale : float
        Resize frames by this factor for cells of another size than the training data's
        (see :class:`~napari_cosine_tracker.core.inference.EmbeddingStream`).
    warmup : int
        Times frame 0 is run before it is labelled, to settle the recurrent state (as
        :func:`track_movie`).
    """

    #: pair clusterings kept for live tuning (each holds its HDBSCAN tree): the most recent
    PAIR_CACHE = 8

    def __init__(self, movie, model_dir=None, device="auto", params=None, track_params=None, half=False,
                 tree_process=True, scale=1.0, warmup=WARMUP_FRAMES,
                 memory_budget: int | None = None):
        from collections import OrderedDict

        self.movie = as_movie(movie)
        self.warmup = int(warmup)
        self.stream = EmbeddingStream(model_dir, device=device, half=half, scale=scale)
        p, tp = default_params(self.stream.config)
        self.params: ClusterParams = params or p
        self.track_params: TrackParams = track_params or tp
        # A long movie's embeddings and tracked frames go to a temporary folder (removed with
        # the session), so memory stays bounded whatever the number of frames.
        T, Y, X = self.movie.shape
        ps = self.stream.pixel_scale
        d = int(self.stream.config["architecture"].get("embedding_dim", 8))
        emb_bytes = T * d * max(1, round(Y * ps)) * max(1, round(X * ps)) * 2
        self.memory_budget = int(buffers.MEMORY_BUDGET_BYTES if memory_budget is None
                                 else memory_budget)
        self.on_disk = emb_bytes > self.memory_budget or T * Y * X * 4 > self.memory_budget
        self.work_dir = None
        if self.on_disk:
            import shutil
            import weakref

            self.work_dir = Path(tempfile.mkdtemp(prefix="nct-session-"))
            (self.work_dir / "embeddings").mkdir()
            weakref.finalize(self, shutil.rmtree, str(self.work_dir), True)
        self._emb = _EmbeddingStore(self.work_dir / "embeddings" if self.on_disk else None)
        self._pairs: OrderedDict[int, PairClustering] = OrderedDict()
        self._pca = None
        self.result: TrackResult | None = None
        self.tree_process = _tree_process(tree_process)

    # -- model ---------------------------------------------------------------------------

    @property
    def n_frames(self) -> int:
        return len(self.movie)

    @property
    def frames_done(self) -> int:
        """Frames the recurrent state has run through."""
        return self.stream.frames_seen

    @property
    def device_description(self) -> str:
        dev = self.stream.device
        if dev.type == "cuda":
            return f"CUDA: {torch.cuda.get_device_name(dev)}"
        if dev.type == "mps":
            return "Apple MPS"
        return f"CPU ({torch.get_num_threads()} threads)"

    def run_model(self, stop: int | None = None) -> Iterator[int]:
        """Process frames from :attr:`frames_done` on, yielding each frame index when done.

        Stopping the iteration pauses; calling again resumes with the ConvGRU state kept.
        """
        stop = self.n_frames if stop is None else min(stop, self.n_frames)
        if self.stream.frames_seen == 0 and self.warmup and stop > 0:
            self.stream.warm_up(self.movie, self.warmup)
        while self.stream.frames_seen < stop:
            t = self.stream.frames_seen
            self._emb[t] = self.stream.push(self.movie[t]).astype(np.float16)
            yield t

    def embeddings(self, t: int) -> np.ndarray:
        """Embeddings (d, y, x) of frame ``t`` at the model's pixel scale."""
        if t not in self._emb:
            raise ValueError(f"frame {t} has not been run through the model yet (done: {self.frames_done})")
        return self._emb[t].astype(np.float32)

    # -- embedding overlay -------------------------------------------------------------

    def pca_rgb(self, t: int) -> np.ndarray:
        """The embeddings' first three principal components as RGB (Y, X, 3) in [0, 1].

        Fitted once on a foreground pixel sample of the frames done so far, so colours stay
        the same across frames; background is black.
        """
        emb = self.embeddings(t)
        if self._pca is None:
            rng = np.random.default_rng(0)
            sample = []
            for k in list(self._emb)[:: max(1, len(self._emb) // 8)]:
                e = self._emb[k].astype(np.float32).reshape(emb.shape[0], -1).T
                fg = e[e[:, 0] < self.params.fg_threshold]
                if len(fg):
                    sample.append(fg[rng.choice(len(fg), min(len(fg), 4000), replace=False)])
            sample = np.concatenate(sample) if sample else emb.reshape(emb.shape[0], -1).T
            mean = sample.mean(0)
            _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
            comps = vt[:3]
            proj = (sample - mean) @ comps.T
            lo, hi = np.percentile(proj, 1, axis=0), np.percentile(proj, 99, axis=0)
            self._pca = (mean, comps, lo, np.maximum(hi - lo, 1e-6))
        mean, comps, lo, span = self._pca
        d, y, x = emb.shape
        flat = emb.reshape(d, -1).T
        rgb = np.clip(((flat - mean) @ comps.T - lo) / span, 0, 1)
        if rgb.shape[1] < 3:
            rgb = np.pad(rgb, ((0, 0), (0, 3 - rgb.shape[1])))
        rgb *= (flat[:, :1] < self.params.fg_threshold)
        rgb = torch.from_numpy(rgb.T.reshape(1, 3, y, x).astype(np.float32))
        big = F.interpolate(rgb, size=self.movie.shape[1:], mode="bilinear", align_corners=False)
        return big[0].permute(1, 2, 0).numpy()

    # -- clustering ----------------------------------------------------------------------

    def _pair(self, t: int) -> PairClustering:
        if t < 1 or t >= self.n_frames:
            raise ValueError(f"frame pairs are (t-1, t) for t in 1..{self.n_frames - 1}, got t={t}")
        pc = self._pairs.get(t)
        if pc is None:
            pc = self._pairs[t] = PairClustering(self.embeddings(t - 1), self.embeddings(t), self.params,
                                                 tree_process=self.tree_process)
            while len(self._pairs) > self.PAIR_CACHE:  # bounded: a long movie has many pairs
                self._pairs.popitem(last=False)
        self._pairs.move_to_end(t)
        return pc

    def cluster_pair(self, t: int, params: ClusterParams | None = None, **changes):
        """Labels of frames ``t - 1`` and ``t`` (movie resolution, shared ids across the pair).

        Fast when only ``min_cluster_size`` or ``min_object_size`` changed (cached tree).
        """
        p = replace(params or self.params, **changes)
        self.params = p
        res = self._pair(t).run(p)
        shape = self.movie.shape[1:]
        a = upsample_labels(res.labels_a, self._emb[t - 1][0], shape, p.fg_threshold, p.shrink)
        b = upsample_labels(res.labels_b, self._emb[t][0], shape, p.fg_threshold, p.shrink)
        return a, b

    def track(self, params: ClusterParams | None = None, track_params: TrackParams | None = None) -> Iterator[int]:
        """Cluster every pair and link them; yields t after each pair. Then see :attr:`result`."""
        import time

        if self.frames_done < self.n_frames:
            raise ValueError(
                f"the model has run {self.frames_done} of {self.n_frames} frames; finish the run before tracking"
            )
        if params is not None:
            self.params = params
        if track_params is not None:
            self.track_params = track_params
        p = self.params
        shape = self.movie.shape[1:]
        frames_dir = None
        if self.on_disk:
            import shutil

            frames_dir = self.work_dir / "frames"
            shutil.rmtree(frames_dir, ignore_errors=True)
            frames_dir.mkdir()
        store = _FrameStore(self.n_frames, shape, frames_dir)
        tracker = Tracker(self.track_params)
        relinker = _Relinker(self.track_params) if self.track_params.linker == "global" else None
        timings = {"cluster_s": 0.0, "track_s": 0.0}

        def emit(frames):
            for t, lab in frames:
                emb_t = self.embeddings(t)
                big = upsample_labels(lab, emb_t[0], shape, p.fg_threshold, p.shrink)
                store.put(t, big)
                if relinker is not None:
                    relinker.add(t, big, lab, emb_t)

        pairs = range(1, self.n_frames) if self.n_frames > 1 else [None]
        for t in pairs:
            t0 = time.perf_counter()
            if t is None:
                res = PairClustering(self.embeddings(0), self.embeddings(0), p,
                                     tree_process=self.tree_process).run()
            else:
                res = self._pair(t).run(p)
            t1 = time.perf_counter()
            emit(tracker.add_pair(res))
            timings["cluster_s"] += t1 - t0
            timings["track_s"] += time.perf_counter() - t1
            yield 0 if t is None else t
        emit([f for f in tracker.finish() if f[0] < self.n_frames])
        t_link = time.perf_counter()
        labels, lineage = _finish(store, tracker.lineage(), in_memory=not self.on_disk,
                                  relinker=relinker)
        if self.on_disk:  # the final labels in one memory-mapped file, a frame at a time
            old = getattr(self.result, "labels", None)
            if isinstance(old, np.memmap):  # the previous result's file (still mapped if
                try:  # shown: POSIX keeps an unlinked file's pages until it is unmapped)
                    Path(old.filename).unlink(missing_ok=True)
                except OSError:
                    pass
            out = label_buffer((self.n_frames,) + tuple(shape), self.work_dir, budget=0)
            for k in range(self.n_frames):
                out[k] = labels.frame(k)
            out.flush()
            labels = out
        timings["track_s"] += time.perf_counter() - t_link
        if self.n_frames == 1:
            lineage = lineage[lineage[:, 1] == 0]
            lineage[:, 2] = 0
        self.result = TrackResult(labels, lineage, timings)
