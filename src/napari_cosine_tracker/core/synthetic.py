"""Seeded synthetic time-lapse movies of fluorescent nuclei, with exact ground truth.

The movies imitate the CTC sequences Fluo-N2DH-SIM+ and Fluo-N2DH-GOWT1: textured, blurred
elliptical nuclei with a darker rim on a noisy, uneven background. Cells move by Brownian
motion with drift, push each other apart so that neighbours touch without piling up, enter and
leave the field of view, and divide (the mother ends at ``t``; two smaller daughters start at
``t + 1`` on either side of her and move apart).

The ground truth uses the same structures as :mod:`napari_cosine_tracker.core.io`: tracked
labels ``(T, Y, X)`` whose values are track ids, and a lineage ``(N, 4)`` int64 array with rows
``id, first, last, parent`` (the CTC ``L B E P`` lines).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

__all__ = ["SyntheticMovie", "make_synthetic_movie"]


@dataclass
class SyntheticMovie:
    """A synthetic movie and its ground truth.

    Attributes
    ----------
    images : ndarray, uint16, shape (T, Y, X)
        Raw fluorescence frames.
    labels : ndarray, uint16, shape (T, Y, X)
        Full instance masks; each value is a track id (0 = background). Masks never overlap.
    lineage : ndarray, int64, shape (N, 4)
        One row ``id, first, last, parent`` per track (``parent == 0``: none), sorted by id.
    params : dict
        The arguments the movie was made with, for provenance.
    """

    images: np.ndarray
    labels: np.ndarray
    lineage: np.ndarray
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape)  # type: ignore[return-value]

    @property
    def n_divisions(self) -> int:
        """Number of mothers (tracks that are the parent of at least one other track)."""
        parents = self.lineage[:, 3]
        return int(np.unique(parents[parents > 0]).size)


@dataclass
class _Cell:
    """Simulation state of one cell (private)."""

    pos: np.ndarray  # (y, x) float centre
    vel: np.ndarray  # (y, x) velocity, px / frame
    drift: np.ndarray  # per-cell constant drift, px / frame
    axes: np.ndarray  # (a, b) semi-axes along the cell's own axes, px
    angle: float  # orientation of axis a, radians
    spin: float  # rotation per frame, radians
    brightness: float
    tex: np.ndarray  # texture parameters: (K, 4) rows of fy, fx, phase, amplitude
    nucleoli: np.ndarray  # (M, 3) rows of u, v (local, normalised), depth
    parent: int = 0  # track id of the mother, 0 = none
    track_id: int = 0  # assigned when the cell first becomes visible
    age: int = 0
    growth: float = 1.0  # size factor, grows slowly until division
    divide_at: int = -1  # frame at which this cell divides (-1: never planned)


def _validate_args(n_frames, shape, n_cells, radius, min_area):
    if int(n_frames) < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if len(shape) != 2 or min(shape) < 16:
        raise ValueError(f"shape must be (Y, X) with both sides >= 16 px, got {shape}")
    if int(n_cells) < 0:
        raise ValueError(f"n_cells must be >= 0, got {n_cells}")
    r0, r1 = radius
    if not (1 <= r0 <= r1):
        raise ValueError(f"radius must be (min, max) semi-axes with 1 <= min <= max, got {radius}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}")


def make_synthetic_movie(
    n_frames: int = 30,
    shape: tuple[int, int] = (256, 256),
    n_cells: int = 10,
    radius: tuple[float, float] = (14, 22),
    divisions: bool = True,
    seed: int = 0,
    *,
    division_rate: float = 0.05,
    enter_rate: float = 0.15,
    speed: float = 1.5,
    drift: float = 0.6,
    noise: float = 0.04,
    blur: float = 1.2,
    min_area: int = 25,
    max_value: int = 4000,
) -> SyntheticMovie:
    """Make a seeded synthetic movie of moving, touching, dividing nuclei.

    Parameters
    ----------
    n_frames : int
        Number of frames ``T``.
    shape : (int, int)
        Frame size ``(Y, X)`` in pixels.
    n_cells : int
        Number of cells in the first frame (more enter and are born later; some leave).
    radius : (float, float)
        Range of the semi-axes of a full-grown nucleus, in pixels. The default (14, 22) gives
        diameters of about 28-44 px, as in Fluo-N2DH-SIM+ / GOWT1 at full resolution.
    divisions : bool
        Whether cells divide.
    seed : int
        Seed of the random generator; the same arguments always give the same movie.
    division_rate : float
        Per-frame probability that a grown cell plans a division.
    enter_rate : float
        Expected number of cells entering through the border per frame.
    speed : float
        Standard deviation of the Brownian velocity, px / frame.
    drift : float
        Magnitude of the shared drift of all cells, px / frame (each cell adds its own).
    noise : float
        Gaussian read noise, relative to the nucleus brightness (plus Poisson shot noise).
    blur : float
        Sigma of the optical blur, px.
    min_area : int
        A cell with fewer visible pixels is not drawn; a track ends when its cell drops below.
    max_value : int
        Approximate brightness of a nucleus in the uint16 output.

    Returns
    -------
    SyntheticMovie
        ``images`` and ``labels`` (T, Y, X) uint16, ``lineage`` (N, 4) int64.

    Notes
    -----
    Pixels are assigned to the cell with the smallest normalised elliptical distance, so
    touching cells share a boundary and masks never overlap. Each mask is one connected piece.
    """
    _validate_args(n_frames, shape, n_cells, radius, min_area)
    rng = np.random.default_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    r_lo, r_hi = float(radius[0]), float(radius[1])
    T = int(n_frames)
    params = dict(
        n_frames=T, shape=(H, W), n_cells=int(n_cells), radius=(r_lo, r_hi),
        divisions=bool(divisions), seed=seed, division_rate=division_rate,
        enter_rate=enter_rate, speed=speed, drift=drift, noise=noise, blur=blur,
        min_area=min_area, max_value=max_value,
    )

    global_drift = rng.normal(size=2)
    global_drift *= drift / max(np.linalg.norm(global_drift), 1e-9)

    def new_cell(pos, growth=None, parent=0, vel=None) -> _Cell:
        a = rng.uniform(r_lo, r_hi)
        b = a * rng.uniform(0.7, 0.95)
        k = 4
        tex = np.column_stack([
            rng.uniform(1.5, 5.0, k) * rng.choice([-1, 1], k),  # cycles per semi-axis
            rng.uniform(1.5, 5.0, k) * rng.choice([-1, 1], k),
            rng.uniform(0, 2 * np.pi, k),
            rng.uniform(0.04, 0.10, k),
        ])
        m = rng.integers(1, 4)
        nuc = np.column_stack([rng.uniform(-0.5, 0.5, m), rng.uniform(-0.5, 0.5, m),
                               rng.uniform(0.15, 0.35, m)])
        return _Cell(
            pos=np.asarray(pos, float),
            vel=rng.normal(0, speed, 2) if vel is None else np.asarray(vel, float),
            drift=rng.normal(0, 0.3 * drift + 1e-9, 2),
            axes=np.array([a, b]),
            angle=rng.uniform(0, np.pi),
            spin=rng.normal(0, 0.03),
            brightness=rng.uniform(0.6, 1.0),
            tex=tex,
            nucleoli=nuc,
            parent=parent,
            growth=rng.uniform(0.85, 1.05) if growth is None else growth,
        )

    # Initial cells: rejection sampling keeps them from starting on top of each other.
    cells: list[_Cell] = []
    tries = 0
    while len(cells) < n_cells and tries < 200 * (n_cells + 1):
        tries += 1
        p = rng.uniform([0, 0], [H, W])
        if all(np.linalg.norm(p - c.pos) > 1.6 * r_lo for c in cells):
            cells.append(new_cell(p))

    images = np.zeros((T, H, W), np.uint16)
    labels = np.zeros((T, H, W), np.uint16)
    rows: dict[int, list[int]] = {}  # id -> [first, last, parent]
    next_id = 1

    # Uneven background: a smooth illumination gradient plus a low-frequency blotch field.
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    gy, gx = rng.normal(0, 1, 2)
    bg = 0.06 + 0.03 * (gy * (yy / H - 0.5) + gx * (xx / W - 0.5))
    blotch = ndi.gaussian_filter(rng.normal(size=(H, W)).astype(np.float32), max(H, W) / 12)
    bg = bg + 0.03 * blotch / (np.abs(blotch).max() + 1e-9)
    bg = np.clip(bg, 0.01, None).astype(np.float32)

    for t in range(T):
        if t > 0:
            cells = _step(cells, t, rng, H, W, r_lo, r_hi, speed, global_drift,
                          divisions, division_rate, enter_rate, new_cell)
        lab_t, img_t, visible = _render(cells, H, W, min_area)
        # Tracks: start when first visible, end (for good) when no longer visible.
        survivors = []
        for i, c in enumerate(cells):
            if visible[i]:
                if c.track_id == 0:
                    c.track_id = next_id
                    next_id += 1
                    rows[c.track_id] = [t, t, c.parent]
                rows[c.track_id][1] = t
                survivors.append(c)
            elif c.track_id == 0 and _may_still_enter(c, H, W):
                survivors.append(c)  # outside or too small for now; may come into view
            # else: the cell left the field (or a daughter never appeared): drop it.
        # Labels drawn with the index of the cell; map to track ids.
        lut = np.zeros(len(cells) + 1, np.uint16)
        for i, c in enumerate(cells):
            lut[i + 1] = c.track_id if visible[i] else 0
        labels[t] = lut[lab_t]
        img = bg + img_t
        img = ndi.gaussian_filter(img, blur) if blur > 0 else img
        # Shot noise (Gaussian approximation of Poisson, cheaper) plus read noise, one draw.
        sigma = np.sqrt(np.clip(img, 0, None) * (1 / 200.0) + noise * noise)
        img = img + sigma * rng.standard_normal(img.shape, dtype=np.float32)
        images[t] = np.clip(img * max_value + 100, 0, 65535).astype(np.uint16)
        cells = survivors

    lineage = np.array([[i, *rows[i]] for i in sorted(rows)], np.int64).reshape(-1, 4)
    # A daughter whose mother never became visible has no parent in the record.
    known = set(rows)
    for r in lineage:
        if r[3] and int(r[3]) not in known:
            r[3] = 0
    return SyntheticMovie(images=images, labels=labels, lineage=lineage, params=params)


def _may_still_enter(c: _Cell, H: int, W: int) -> bool:
    """An unseen cell is kept while it is near the field and heading in."""
    margin = 3 * c.axes.max()
    y, x = c.pos
    return -margin < y < H + margin and -margin < x < W + margin and c.parent == 0


def _step(cells, t, rng, H, W, r_lo, r_hi, speed, global_drift, divisions, division_rate,
          enter_rate, new_cell):
    """Advance the simulation by one frame: divide, move, repel, enter."""
    out: list[_Cell] = []
    area_frac = sum(np.pi * c.axes.prod() * c.growth**2 for c in cells) / (H * W)
    for c in cells:
        c.age += 1
        if c.divide_at == t and c.track_id:
            # Mother ended at t-1 (her last frame); daughters start now on either side.
            d = np.array([np.sin(c.angle), np.cos(c.angle)])  # along axis a, (y, x)
            off = 0.55 * c.axes[0] * c.growth
            for s in (-1, 1):
                dau = new_cell(c.pos + s * off * d, growth=0.75 * c.growth, parent=c.track_id,
                               vel=c.vel * 0.5 + s * 1.5 * d)
                dau.axes = c.axes * rng.uniform(0.95, 1.05)  # each daughter ~half the area
                dau.angle = c.angle + rng.normal(0, 0.2)
                out.append(dau)
            continue
        if c.divide_at == t and not c.track_id:
            continue  # divided before it was ever seen: drop mother and daughters
        # Ornstein-Uhlenbeck velocity: Brownian with memory, plus drift.
        c.vel = 0.6 * c.vel + rng.normal(0, speed, 2)
        c.pos = c.pos + c.vel + global_drift + c.drift
        c.angle += c.spin
        c.growth = min(c.growth * 1.01, 1.15)
        if (divisions and c.divide_at < 0 and c.track_id and c.age > 3 and c.growth > 0.95
                and area_frac < 0.45 and rng.random() < division_rate):
            c.divide_at = t + 2  # visible (rounded, bright) for one more frame, then splits
        out.append(c)
    # Soft repulsion so that neighbours touch but do not pile up.
    if len(out) > 1:
        pos = np.array([c.pos for c in out])
        size = np.array([c.axes.mean() * c.growth for c in out])
        want = 0.85 * (size[:, None] + size[None, :])
        for _ in range(3):
            dvec = pos[None, :, :] - pos[:, None, :]  # i -> j
            dist = np.hypot(dvec[..., 0], dvec[..., 1]) + 1e-6
            over = np.clip(want - dist, 0, None)
            np.fill_diagonal(over, 0)
            push = 0.5 * (over / dist)[..., None] * dvec
            pos = pos - push.sum(axis=1)
        for c, p in zip(out, pos):
            c.pos = p
    # Cells entering through a random border side, heading inwards.
    n_new = rng.poisson(enter_rate) if area_frac < 0.45 else 0
    for _ in range(n_new):
        side = rng.integers(4)
        r = r_hi
        if side == 0:
            p, v = (-r, rng.uniform(0, W)), (1.5 * speed, 0)
        elif side == 1:
            p, v = (H + r, rng.uniform(0, W)), (-1.5 * speed, 0)
        elif side == 2:
            p, v = (rng.uniform(0, H), -r), (0, 1.5 * speed)
        else:
            p, v = (rng.uniform(0, H), W + r), (0, -1.5 * speed)
        c = new_cell(p, vel=np.array(v, float))
        c.drift = c.drift + 0.8 * np.array(v, float)  # keep heading in for a while
        out.append(c)
    return out


def _render(cells, H, W, min_area):
    """Rasterise cells: (index labels, clean intensity image, visible flags).

    Each pixel goes to the cell with the smallest normalised elliptical distance ``r`` (r < 1
    inside the ellipse), which splits touching cells along a smooth boundary.
    """
    best = np.full((H, W), np.inf, np.float32)
    lab = np.zeros((H, W), np.int32)
    inten = np.zeros((H, W), np.float32)
    local = []
    for i, c in enumerate(cells):
        a, b = c.axes * c.growth
        if c.divide_at >= 0:
            a = b = np.sqrt(a * b) * 0.95  # mitotic cells round up
        R = int(np.ceil(max(a, b))) + 1
        cy, cx = c.pos
        y0, y1 = max(int(np.floor(cy)) - R, 0), min(int(np.ceil(cy)) + R + 1, H)
        x0, x1 = max(int(np.floor(cx)) - R, 0), min(int(np.ceil(cx)) + R + 1, W)
        if y0 >= y1 or x0 >= x1:
            local.append(None)
            continue
        dy = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
        dx = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
        ca, sa = np.float32(np.cos(c.angle)), np.float32(np.sin(c.angle))
        u = (dx * ca + dy * sa) / a  # along axis a
        v = (-dx * sa + dy * ca) / b
        r = np.sqrt(u * u + v * v)  # < 1 inside the ellipse
        sl = (slice(y0, y1), slice(x0, x1))
        inside = (r < 1) & (r < best[sl])
        best[sl][inside] = r[inside]
        lab[sl][inside] = i + 1
        local.append((sl, u, v, r))
    visible = np.zeros(len(cells), bool)
    objs = ndi.find_objects(lab, max_label=len(cells))
    for i, bbox in enumerate(objs):
        if bbox is None:
            continue
        m = lab[bbox] == i + 1
        comp, n = ndi.label(m)
        if n > 1:  # keep one connected piece per cell (the largest)
            sizes = np.bincount(comp.ravel())[1:]
            keep = comp == (np.argmax(sizes) + 1)
            lab[bbox][m & ~keep] = 0
            m = keep
        if m.sum() >= min_area:
            visible[i] = True
        else:
            lab[bbox][m] = 0
    for i, item in enumerate(local):
        if item is None or not visible[i]:
            continue
        # Texture: a few sinusoids and dark nucleoli in the cell's own frame, so it moves
        # and turns with the cell; a darker rim separates touching nuclei.
        c = cells[i]
        sl, u, v, r = item
        m = lab[sl] == i + 1
        u, v, r = u[m], v[m], r[m]
        tex = np.ones_like(r)
        for fy, fx, ph, amp in c.tex:
            tex += amp * np.sin(np.pi * (fy * v + fx * u) + ph)
        for nu, nv, depth in c.nucleoli:
            tex -= depth * np.exp(-((u - nu) ** 2 + (v - nv) ** 2) / 0.02)
        rim = 1.0 - 0.35 * np.clip((r - 0.75) / 0.25, 0, 1)
        bright = c.brightness * (1.4 if c.divide_at >= 0 else 1.0)
        inten[sl][m] = bright * tex * rim
    return lab, inten, visible
