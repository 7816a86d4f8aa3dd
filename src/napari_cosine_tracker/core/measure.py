"""Measurements of a tracking result: per cell and per track, in pixels and physical units.

Per cell (a track in one frame): centroid, area, mean intensity of the movie under its mask,
and its speed (distance from the same track's cell a frame earlier, per frame interval).
Per track: duration, mean speed, net displacement (first to last centroid), generation (0
for a track without mother, 1 for her daughters ...), whether it divides, and its time to
division (its duration, for a track that ends in a division).

Pixel size and frame interval turn pixels into ``space_unit`` and frames into ``time_unit``;
without them everything is in pixels and frames. Used by the CSV export, the Tracks layer's
features and the plots widget; ``pandas`` reads the tables as they are
(``pandas.DataFrame(cells)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "cell_measurements", "track_measurements"]


@dataclass(frozen=True)
class Calibration:
    """Physical size of a pixel (y, x) and time between frames; None: unknown."""

    pixel_size: tuple[float, float] | None = None
    frame_interval: float | None = None
    space_unit: str = "µm"
    time_unit: str = "min"

    @classmethod
    def of(cls, pixel_size=None, frame_interval=None, **units) -> Calibration:
        if pixel_size is not None and np.isscalar(pixel_size):
            pixel_size = (float(pixel_size),) * 2
        elif pixel_size is not None:
            pixel_size = tuple(float(v) for v in pixel_size)
        return cls(pixel_size, None if frame_interval is None else float(frame_interval), **units)

    @property
    def length(self) -> float:
        """Length of a pixel (geometric mean of y and x); 1 when unknown."""
        return 1.0 if self.pixel_size is None else float(np.sqrt(self.pixel_size[0] * self.pixel_size[1]))

    @property
    def dt(self) -> float:
        return 1.0 if self.frame_interval is None else self.frame_interval

    @property
    def length_unit(self) -> str:
        return "px" if self.pixel_size is None else self.space_unit

    @property
    def duration_unit(self) -> str:
        return "frames" if self.frame_interval is None else self.time_unit


def cell_measurements(labels, lineage, images=None, calibration: Calibration | None = None) -> dict:
    """Columns (numpy arrays, one entry per cell, sorted by track then frame): ``track_id,
    frame, y, x, area`` (pixels), ``mean_intensity`` (with ``images``), ``speed`` (length
    units per time unit, nan on a track's first cell), and with a calibration ``time, y_um,
    x_um, area_um2`` (named after the units)."""
    from .export import cell_table

    cal = calibration or Calibration()
    table = cell_table(labels, lineage)
    cols = {"track_id": table.track_id, "frame": table.frame, "y": table.y, "x": table.x,
            "area": table.area}
    if images is not None:
        cols["mean_intensity"] = _mean_intensity(labels, images, table)
    step = np.full(len(table), np.nan)
    same = (table.track_id[1:] == table.track_id[:-1]) & (table.frame[1:] == table.frame[:-1] + 1)
    dist = np.hypot(np.diff(table.y), np.diff(table.x)) * cal.length
    step[1:][same] = dist[same] / cal.dt
    cols["speed"] = step
    if cal.frame_interval is not None:
        cols[f"time_{cal.time_unit}"] = table.frame * cal.frame_interval
    if cal.pixel_size is not None:
        u = cal.space_unit
        cols[f"y_{u}"] = table.y * cal.pixel_size[0]
        cols[f"x_{u}"] = table.x * cal.pixel_size[1]
        cols[f"area_{u}2"] = table.area * cal.pixel_size[0] * cal.pixel_size[1]
    return cols


def _mean_intensity(labels, images, table) -> np.ndarray:
    from scipy import ndimage

    out = np.full(len(table), np.nan)
    for t in np.unique(table.frame).tolist():
        rows = np.flatnonzero(table.frame == t)
        ids = table.track_id[rows]
        out[rows] = ndimage.mean(np.asarray(images[t], np.float64), np.asarray(labels[t]), ids)
    return out


def track_measurements(labels, lineage, calibration: Calibration | None = None,
                       cells: dict | None = None) -> dict:
    """Columns, one entry per track (lineage order): ``track_id, parent_track_id, first,
    last, duration, mean_speed, displacement, generation, divides, time_to_division``
    (duration in time units, nan for a track that does not divide)."""
    cal = calibration or Calibration()
    lin = np.asarray(lineage, np.int64).reshape(-1, 4)
    cells = cells if cells is not None else cell_measurements(labels, lin, calibration=cal)
    parent = dict(zip(lin[:, 0].tolist(), lin[:, 3].tolist()))
    mothers = {p for p in parent.values() if p}

    def generation(i):
        g, seen = 0, set()
        while parent.get(i, 0) and i not in seen:
            seen.add(i)
            i = parent[i]
            g += 1
        return g

    tid = cells["track_id"]
    order = np.argsort(tid, kind="stable")
    starts = np.searchsorted(tid[order], lin[:, 0], side="left")
    ends = np.searchsorted(tid[order], lin[:, 0], side="right")
    mean_speed = np.full(len(lin), np.nan)
    displacement = np.full(len(lin), np.nan)
    for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        if b <= a:
            continue
        rows = order[a:b]
        s = cells["speed"][rows]
        if np.isfinite(s).any():
            mean_speed[k] = np.nanmean(s)
        ys, xs = cells["y"][rows], cells["x"][rows]
        displacement[k] = np.hypot(ys[-1] - ys[0], xs[-1] - xs[0]) * cal.length
    duration = (lin[:, 2] - lin[:, 1] + 1) * cal.dt
    divides = np.array([i in mothers for i in lin[:, 0].tolist()])
    return {"track_id": lin[:, 0], "parent_track_id": lin[:, 3], "first": lin[:, 1],
            "last": lin[:, 2], "duration": duration, "mean_speed": mean_speed,
            "displacement": displacement,
            "generation": np.array([generation(i) for i in lin[:, 0].tolist()], np.int64),
            "divides": divides, "time_to_division": np.where(divides, duration, np.nan)}
