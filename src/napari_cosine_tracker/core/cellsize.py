"""How much to resize a movie so that its cells come out the size the model was trained on.

The network knows cells of one size: in the pixels it works in, about the diameter its
training cells had (``preprocessing.cell_diameter`` of the model's config). Cells much
smaller are merged with their neighbours and the background, cells much larger break into
pieces: on the held-out Cell Tracking Challenge frames shrunk to half size, DET falls from
0.98 to 0.83 without resizing back (docs/method.md, "Cell size").

:func:`estimate_scale` finds the resize factor from the model's own segmentation, as
cellpose's size model does for its diameter but with no second network: segment a few frames
at the current guess, measure the cells (area-weighted median diameter), and correct the
guess by the ratio of the model's cell diameter to the measured one, until it settles. Cells
far smaller than the model knows merge into clumps of about a cell's size, a false resting
point; so it settles a second time from twice the answer and keeps the answer whose cells are
cleaner (:func:`coherence`: how well each cell's embeddings agree). A mild enlargement is
refused where the cells found near it look like pieces of larger cells
(:func:`pieces_of_larger_cells`: cut differently in two clusterings of a frame, and
multiplying as the frames are enlarged); the movie then keeps its size. Only a central crop
of at most ``max_side`` model pixels is processed, so one round costs about the same at any
scale and frame size.

Public API: :func:`estimate_scale`, :func:`iter_estimate_scale`, :func:`cell_diameter`,
:func:`frames_cell_diameter`, :func:`coherence`, :func:`agreement`,
:func:`pieces_of_larger_cells`, :func:`model_cell_diameter`, :func:`parse_scale`,
:class:`ScaleEstimate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .cluster import ClusterParams
from .inference import EmbeddingStream, check_scale
from .io import as_movie

__all__ = ["ScaleEstimate", "cell_diameter", "frames_cell_diameter", "diameter_from_areas",
           "coherence", "agreement", "pieces_of_larger_cells", "model_cell_diameter",
           "model_cell_range", "estimate_scale", "iter_estimate_scale", "parse_scale",
           "stream_at_scale", "AUTO"]

AUTO = "auto"

# Cell diameter, in model pixels, for model configs from before the key existed: what the
# shipped model's own segmentation measures on its training movies (see model_cell_diameter).
DEFAULT_CELL_DIAMETER = 28.0
SCALE_RANGE = (0.1, 10.0)  # the widget's range; check_scale allows a little more
# Fewer cells than this in the measured frames: the estimate is a guess, not proposed.
MIN_CELLS = 5
# How the estimate clusters (see iter_estimate_scale): the shipped models' training-default
# clustering, with small clusters and objects allowed.
ESTIMATE_CLUSTERING = ClusterParams(min_samples=8, min_cluster_size=20, coord_scale=45.0,
                                    fg_threshold=0.15, min_object_size=8, shrink=0)
# Enlarging frames by up to this factor is cheap enough to always go to the model's median
# cell size (see iter_estimate_scale for what happens beyond).
CHEAP_ENLARGEMENT = 2.0
# A mild enlargement (up to CHEAP_ENLARGEMENT) is refused as pieces of larger cells (see
# pieces_of_larger_cells) where the rounds within NEAR (log) of it agree on less than
# MIN_AGREEMENT of the cells' area in two clusterings of one frame (see :func:`agreement`)
# and their number per area grows faster than factor ** MAX_GROWTH. Measured with the
# fluorescence model on movies it never trained on (docs/method.md, "Cell size", step 4):
# agreement 0.99-1.00 on synthetic nuclei, 0.94-0.95 on dense or mildly cut ones, 0.91 on the
# pieces it cuts Fluo-C2DL-MSC's whole cells into near 1.29 (DET 0); growth -0.1-0.3 on the
# synthetic nuclei, 1.9 on the pieces.
MIN_AGREEMENT = 0.95
NEAR = math.log(1.15)
MAX_GROWTH = 1.0


@dataclass
class ScaleEstimate:
    """Outcome of :func:`estimate_scale`.

    Attributes
    ----------
    scale : float
        Resize factor for ``EmbeddingStream(scale=...)``, ``track --scale``, the widget.
    cell_diameter : float
        Typical cell diameter in the movie's pixels (area-weighted median), as measured at
        ``scale``; nan when no cell was found.
    converged : bool
        The last step changed the scale by less than the tolerance.
    frames : (int, int)
        The frames looked at (start, stop).
    steps : list of (scale, diameter in model pixels, cells, coherence, agreement, cells per
        megapixel of the movie)
        Every round, in order (see :func:`coherence` and :func:`agreement`; agreement is nan
        where fewer than three frames were looked at).
    unsure : str
        Why no factor is proposed (``scale`` is then the starting factor), or "".
    cells : int or None
        Cells found in the round nearest the answer: what the estimate rests on (the last
        round may be a rejected one, e.g. the second settle's fragments).
    """

    scale: float
    cell_diameter: float
    converged: bool
    frames: tuple[int, int] = (0, 0)
    steps: list = field(default_factory=list)
    unsure: str = ""
    cells: int | None = None

    def describe(self) -> str:
        """One line for people: the estimate, what it rests on, and whether to trust it."""
        if not self.steps or not np.isfinite(self.cell_diameter):
            return (f"No cells were found in frames {self.frames[0]}-{self.frames[1] - 1}; kept "
                    f"resize factor {self.scale:.2f}: set the resize factor by hand.")
        if self.unsure:
            return (f"Could not tell the cell size ({self.unsure}, frames {self.frames[0]}-"
                    f"{self.frames[1] - 1}); kept resize factor {self.scale:.2f}. If the model "
                    "finds no cells or broken ones, set the factor by hand: 2 for cells half as "
                    "wide as the model's, 0.5 for twice as wide.")
        text = (f"Cells are about {self.cell_diameter:.0f} pixels across: resize by "
                f"{self.scale:.2f} (frames {self.frames[0]}-{self.frames[1] - 1}, "
                f"{self.steps[-1][2] if self.cells is None else self.cells} cells, "
                f"{len(self.steps)} rounds).")
        if not self.converged:
            text += " It did not settle: check the cells, or set the factor by hand."
        return text


def parse_scale(value) -> float | str:
    """A resize factor as given by a user: a number (checked) or ``"auto"`` (estimate it)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"scale must be a number (the factor to resize frames by) or "
                             f"'auto' (estimate it from the cells), got {value!r}") from None
    return check_scale(value)


def cell_diameter(labels: np.ndarray) -> tuple[float, int]:
    """Typical diameter of the labelled cells: the area-weighted median of their equivalent
    diameters (``sqrt(4 area / pi)``), so a few tiny fragments do not outvote the cells.

    Parameters
    ----------
    labels : ndarray of int
        Instance labels, 0 (and negative values) background. Any dimensionality; each id
        counts as one object.

    Returns
    -------
    diameter : float
        In pixels; nan when there is no object.
    count : int
        Number of objects.
    """
    return diameter_from_areas(_areas(labels))


def _areas(labels) -> np.ndarray:
    lab = np.asarray(labels)
    areas = np.bincount(lab[lab > 0].ravel().astype(np.int64))
    return areas[areas > 0].astype(np.float64)


def diameter_from_areas(areas) -> tuple[float, int]:
    """Area-weighted median equivalent diameter of objects with these pixel areas, and their
    number (see :func:`cell_diameter`)."""
    areas = np.asarray(areas, np.float64)
    if areas.size == 0:
        return float("nan"), 0
    d = np.sqrt(4.0 * areas / math.pi)
    order = np.argsort(d)
    half = np.searchsorted(np.cumsum(areas[order]) / areas.sum(), 0.5)
    return float(d[order][half]), int(areas.size)


def frames_cell_diameter(label_frames) -> float:
    """:func:`cell_diameter` over many 2-D label frames, each frame's objects counted apart
    (a track id in several frames is several objects): what ``train`` records as the model's
    ``cell_diameter``."""
    areas = [_areas(lab) for lab in label_frames]
    return diameter_from_areas(np.concatenate(areas) if areas else [])[0]


def coherence(emb: np.ndarray, labels: np.ndarray) -> float:
    """How tightly each cell's embeddings point one way: the area-weighted mean over cells of
    ``mean_p cos(mean embedding, e_p)`` -- one minus the pull term of the cosine embedding
    loss, on the model's own cells. Near 1 when every cell is one clean direction; it drops
    where cells are larger than the model knows (they break into differently-coloured parts)
    or where a cluster holds several cells. nan without cells.
    """
    lab = np.asarray(labels).ravel()
    keep = lab > 0
    if not keep.any():
        return float("nan")
    e = np.asarray(emb, np.float64).reshape(emb.shape[0], -1)[:, keep]
    e /= np.maximum(np.linalg.norm(e, axis=0, keepdims=True), 1e-12)
    ids = np.unique(lab[keep], return_inverse=True)[1]
    sums = np.stack([np.bincount(ids, weights=row) for row in e])  # (d, cells)
    means = sums / np.maximum(np.linalg.norm(sums, axis=0, keepdims=True), 1e-12)
    return float(np.mean(np.einsum("dp,dp->p", e, means[:, ids])))


def agreement(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """How far two segmentations of the same frame agree: the area-weighted mean, over the
    objects of ``labels_a``, of their best IoU with an object of ``labels_b``. Real cells come
    out the same however the frame is paired; pieces of cells larger than the model knows
    are cut where the clustering happens to cut them, differently each time. nan without
    objects in ``labels_a``."""
    a = np.asarray(labels_a).ravel().astype(np.int64)
    b = np.asarray(labels_b).ravel().astype(np.int64)
    a[a < 0] = 0
    b[b < 0] = 0
    area_a = np.bincount(a)
    area_a[0] = 0
    if not area_a.any():
        return float("nan")
    area_b = np.bincount(b)
    both = (a > 0) & (b > 0)
    # overlaps of every (a, b) pair of objects, as one sparse count
    pair = a[both] * (b.max() + 1) + b[both]
    keys, inter = np.unique(pair, return_counts=True)
    ia, ib = keys // (b.max() + 1), keys % (b.max() + 1)
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    best = np.zeros(area_a.size)
    np.maximum.at(best, ia, iou)
    return float((best * area_a).sum() / area_a.sum())


def model_cell_diameter(config: dict | None) -> float:
    """The cell diameter, in model pixels, that a model was trained on (its config's
    ``preprocessing.cell_diameter``; :data:`DEFAULT_CELL_DIAMETER` for older configs)."""
    pre = (config or {}).get("preprocessing", {})
    return float(pre.get("cell_diameter", DEFAULT_CELL_DIAMETER))


def model_cell_range(config: dict | None) -> tuple[float, float] | None:
    """The range of cell diameters, in model pixels, a model was trained on
    (``preprocessing.cell_diameter_range``, or the ``--cell-diameter MIN MAX`` of its training
    command), or None for a model trained on cells of one size."""
    config = config or {}
    rng = config.get("preprocessing", {}).get("cell_diameter_range")
    if rng is None:
        rng = config.get("training", {}).get("config", {}).get("cell_diameter")
    if isinstance(rng, (list, tuple)) and len(rng) == 2 and 0 < rng[0] <= rng[1]:
        return float(rng[0]), float(rng[1])
    return None


def pieces_of_larger_cells(steps, scale: float) -> str:
    """Why the cells an estimate found near a mild enlargement ``scale`` look like pieces of
    cells larger than the model knows, or "" when they look like cells.

    Where the model cuts large cells into pieces of its own size, the pieces multiply as the
    frames are enlarged and the estimate settles on a false fixed point (Fluo-C2DL-MSC with
    the fluorescence model: "44 px cells" where they are 89, x1.29, DET 0 against 0.39 at
    1). Their size cannot tell pieces from cells; how they hold and how their number grows
    can. Cells come out the same in two clusterings of a frame and keep their number per area
    of the movie at any factor; pieces are cut differently each time and multiply about with
    the square of the factor. Either sign alone also fires on cells: dense nuclei agree less,
    small cells that clumps hid at 1 grow in number; so it takes both: the rounds within
    :data:`NEAR` of ``scale`` agree less than :data:`MIN_AGREEMENT`, and from the round
    nearest the movie's own size their number per area grows faster than the factor
    (:data:`MAX_GROWTH`).

    Parameters
    ----------
    steps : list of tuples
        The estimate's rounds, as in :attr:`ScaleEstimate.steps`; one at least near ``scale``.
    scale : float
        The factor about to be proposed.
    """
    near = [st for st in steps if abs(math.log(st[0] / scale)) <= NEAR]
    if not near:
        return ""
    held = float(np.mean([st[4] for st in near]))
    ref = min(steps, key=lambda st: abs(math.log(st[0])))  # nearest the movie's own size
    more = float(np.mean([st[5] for st in near])) / ref[5] if ref[5] > 0 else float("nan")
    growth = float("nan")  # cells per area ~ factor ** growth
    if abs(math.log(ref[0] / scale)) > NEAR and more > 0:
        growth = math.log(more) / math.log(scale / ref[0])
    # nan (fewer than three frames, or no round far enough from it to tell): cells
    if held < MIN_AGREEMENT and growth > MAX_GROWTH:
        return (f"the cells found near {scale:.2f} are not the same in two clusterings of one "
                f"frame ({held:.1%} of their area agrees), and there are {more:.1f} times as "
                f"many per area as at {ref[0]:.2f}: they may be pieces of larger cells")
    return ""


def _central_crop(frame: np.ndarray, side: int) -> np.ndarray:
    Y, X = frame.shape
    y0, x0 = max(0, (Y - side) // 2), max(0, (X - side) // 2)
    return frame[y0:y0 + side, x0:x0 + side]


def iter_estimate_scale(movie, model_dir=None, *, device="auto", model=None, config=None,
                        start: int | None = None, n_frames: int = 3, initial: float = 1.0,
                        max_side: int = 512, max_rounds: int = 6, tolerance: float = 0.05,
                        tree_process=None):
    """Generator form of :func:`estimate_scale`: yields a step ``(scale, diameter in model
    pixels, cells, coherence, agreement, cells per megapixel)`` after every round (for
    progress and cancel) and returns the :class:`ScaleEstimate`. At most
    ``2 * max_rounds + 1`` rounds."""
    from .cluster import PairClustering
    from .model import load_model
    from .pipeline import _tree_process

    movie = as_movie(movie)
    T = movie.shape[0]
    n = max(1, min(int(n_frames), T))
    # The middle of the movie: usually more cells than the start.
    t0 = max(0, min(T - n, T // 2 - n // 2)) if start is None else int(start)
    if not 0 <= t0 <= T - n:
        raise ValueError(f"start frame {start} leaves fewer than {n} frames in a movie of {T}")
    frames = [np.asarray(movie[t]) for t in range(t0, t0 + n)]
    if n == 1:  # a single frame is clustered with itself, as track_movie does
        frames = frames * 2
    if model is None:
        model, config = load_model(model_dir, device="cpu")
    target = model_cell_diameter(config)
    # The estimate clusters with settings of its own, not the model's recommended ones: its
    # rules (the second settle, the pieces check, the halfway rule) were measured with these,
    # and a model's recommendations tuned for tracking (larger masks, coarser clusters) move
    # the cell size it reads (the label-free model tuned on unseen DIC and PSC: PSC's
    # estimate went from 2.72 to 4.01 and DET from 0.826 to 0.812). Cells can also be far
    # smaller than the recommendations expect while the guess is off.
    params = ESTIMATE_CLUSTERING
    steps = []
    trees = _tree_process(tree_process)

    def measure(scale):
        stream = EmbeddingStream(model=model, config=config, device=device, scale=scale)
        side = int(math.ceil(max_side / stream.pixel_scale))
        crops = [_central_crop(f, side) for f in frames]
        embs = [stream.push(c) for c in crops]
        mid, lab = PairClustering(embs[-2], embs[-1], params, tree_process=trees).run()
        d, count = cell_diameter(lab)
        agree = float("nan")
        # the middle frame clustered with its previous frame as well, where the round may be
        # near a mild enlargement (the only rounds pieces_of_larger_cells reads)
        if len(embs) >= 3 and math.exp(-NEAR) <= scale <= CHEAP_ENLARGEMENT * math.exp(NEAR):
            before = PairClustering(embs[-3], embs[-2], params, tree_process=trees).run()
            agree = agreement(mid, before.labels_b)
        per_mpx = count / max(1, crops[-1].size) * 1e6  # cells per megapixel of the movie
        steps.append((scale, d, count, coherence(embs[-1], lab), agree, per_mpx))
        return d / stream.pixel_scale  # movie pixels

    def settle(scale):
        """Segment, measure, correct until the correction is small: (scale, diameter in
        movie pixels, coherence, converged)."""
        for _ in range(int(max_rounds)):
            measured = measure(scale)
            yield steps[-1]
            d = steps[-1][1]
            if not np.isfinite(d):
                return scale, measured, steps[-1][3], False
            # At most 4x per round: far from the right scale the measure is only a direction.
            new = float(np.clip(scale * target / d, scale / 4, scale * 4))
            new = float(np.clip(new, *SCALE_RANGE))
            if abs(math.log(new / scale)) < tolerance or new == scale:
                return scale, measured, steps[-1][3], True
            scale = new
        return scale, measured, steps[-1][3], False

    first = yield from settle(check_scale(float(initial)))
    best = first
    if np.isfinite(first[1]) and first[0] * 2 <= SCALE_RANGE[1]:
        # Cells far smaller than the model knows merge into clumps of about a cell's size: a
        # false fixed point below the right scale. Settling again from twice the scale tells:
        # where the model's cells are clean there, its embeddings agree better within each
        # cell (higher coherence) than at the clumps.
        second = yield from settle(first[0] * 2)
        if np.isfinite(second[1]) and second[2] > first[2]:
            best = second
    scale, measured, _, converged = best
    # A factor resting on a handful of cells is a guess that can make the movie far worse
    # than no resize (a model that finds one blob proposed x10): say so and keep the starting
    # factor. (One that did not settle is still proposed, with a warning: on a phase-contrast
    # movie of 13-px cells it wanders between 3.7 and 4.3, and DET there is 0.87 against
    # 0.76 at no resize.) The cells counted are those of the round nearest the answer.
    nearest = min(steps, key=lambda st: abs(math.log(st[0] / scale))) if steps else None
    count = nearest[2] if nearest is not None else 0
    unsure = ""
    if np.isfinite(measured) and count < MIN_CELLS:
        unsure = f"only {count} cell{'s' if count != 1 else ''} found"
    elif not np.isfinite(measured):
        # The guess walked to a factor where the model finds nothing (a model that merged
        # DIC's cells went 1 -> 0.25 and lost every cell there): that is no answer either.
        unsure = "no cells found"
    settled = scale
    if unsure:
        scale = check_scale(float(initial))
    elif scale > CHEAP_ENLARGEMENT and (span := model_cell_range(config)) is not None:
        # Small cells are enlarged to the median cell size the model learnt, but a model
        # trained on a range of sizes does not need it where that costs much (the cost grows
        # with the square of the factor): past a factor of 2, they are only enlarged halfway
        # (in log) from the smallest trained size to the median. Halfway rather than to the
        # edge: the model's own measure of cells it does not know is off by a fifth or more.
        # On phase-contrast frames of 13-px cells (PSC) a model trained on 10-36 model pixels
        # without them scored DET 0.896 at 2.04 (halfway), 0.882 at 4.14 (the median), 0.847
        # at 1.25 (the edge; docs/model.md). Below a factor of 2 the median is kept: on the
        # sample movie (33-px cells) the label-free model scored SEG 0.80 at 1.0 (in range)
        # against 0.88 at 1.5. Large cells are always brought to the median: shrinking costs
        # nothing, and on DIC the model reads large cells too small (fragments), so stopping
        # at the range's top end left them too large (DET 0.23 at 1.0 against 0.54 at 0.55).
        scale = check_scale(min(scale, max(CHEAP_ENLARGEMENT,
                                           scale * math.sqrt(span[0] / target))))
    # (Checked on where it settled: cells that need more than CHEAP_ENLARGEMENT are small
    # cells, whose factor the range rule above may have brought down to it; dense small cells
    # agree less, 0.88-0.93 on PSC, and not enlarging them loses most.)
    if not unsure and 1.0 < settled <= CHEAP_ENLARGEMENT and math.log(scale) >= tolerance:
        # A mild enlargement buys little where the model's cells are right (SEG +0.06, DET
        # level on synthetic nuclei) and costs everything where they are pieces of cells
        # larger than the model knows (see pieces_of_larger_cells).
        if not any(abs(math.log(st[0] / scale)) <= NEAR for st in steps):
            measure(scale)
            yield steps[-1]
        reason = pieces_of_larger_cells(steps, scale)
        if reason:
            unsure, scale = reason, 1.0
    return ScaleEstimate(scale=scale, cell_diameter=measured, converged=converged,
                         frames=(t0, t0 + n), steps=steps, unsure=unsure, cells=count)


def estimate_scale(movie, model_dir=None, **kwargs) -> ScaleEstimate:
    """Estimate the resize factor that brings a movie's cells to the model's cell size.

    Parameters
    ----------
    movie : array or Movie
        ``(T, Y, X)``; only ``n_frames`` frames (from the middle) are read.
    model_dir : path, optional
        Model folder; default the shipped model.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``mps``.
    model, config : optional
        An already loaded model and its config (instead of ``model_dir``).
    start : int, optional
        First frame to look at (default: the middle of the movie).
    n_frames : int
        Frames run through the model per round (the last pair is clustered).
    initial : float
        First guess (1: the movie's cells are the training cells' size).
    max_side : int
        Side, in model pixels, of the central crop processed.
    max_rounds : int
        Most rounds of segment, measure, correct.
    tolerance : float
        Stop when a round changes the scale by less than this (relative, as a log ratio).
    tree_process : bool, optional
        Build HDBSCAN's trees in the shared child process (as the GUI does, so the
        GIL-holding code never stalls the event loop).

    Returns
    -------
    ScaleEstimate

    Examples
    --------
    >>> from napari_cosine_tracker.core.io import read_movie                  # doctest: +SKIP
    >>> est = estimate_scale(read_movie("small_nuclei.tif"))                  # doctest: +SKIP
    >>> est.scale, est.cell_diameter, est.converged                           # doctest: +SKIP
    (2.05, 26.3, True)
    """
    gen = iter_estimate_scale(movie, model_dir, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def stream_at_scale(movie, scale, model_dir=None, device="auto", **kwargs):
    """An :class:`~napari_cosine_tracker.core.inference.EmbeddingStream` at ``scale``, or at
    the scale estimated on ``movie`` when ``scale`` is ``"auto"``.

    Returns ``(stream, estimate)``; ``estimate`` is the :class:`ScaleEstimate`, or None for a
    given number. ``kwargs`` go to the stream (e.g. ``half``).
    """
    scale = parse_scale(scale)
    stream = EmbeddingStream(model_dir, device=device, scale=1.0 if scale == AUTO else scale,
                             **kwargs)
    if scale != AUTO:
        return stream, None
    est = estimate_scale(movie, model=stream.model, config=stream.config, device=device)
    return EmbeddingStream(model=stream.model, config=stream.config, device=device,
                           scale=est.scale, **kwargs), est
