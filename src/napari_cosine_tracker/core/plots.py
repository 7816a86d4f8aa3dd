"""Summary plots of a tracking result: cells over time, track durations, speeds, divisions.

:func:`summary_figure` draws the four panels on a matplotlib ``Figure`` (no pyplot, no GUI
backend: it works on a cluster node and inside napari alike); :func:`save_figure` writes it
as PNG, SVG or PDF atomically. The plots widget and ``napari-cosine-tracker plot`` both use
these.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import atomic_file
from .measure import Calibration, cell_measurements, track_measurements

__all__ = ["summary_figure", "save_figure", "FORMATS"]

FORMATS = (".png", ".svg", ".pdf")


def summary_figure(labels, lineage, calibration: Calibration | None = None, title: str = "",
                   figure=None):
    """Four panels: cells per frame, track durations, cell speeds, divisions over time.

    ``figure``: draw on this matplotlib Figure (cleared first), e.g. a widget's canvas;
    default a new one. Returns the figure.
    """
    from matplotlib.figure import Figure

    cal = calibration or Calibration()
    lin = np.asarray(lineage, np.int64).reshape(-1, 4)
    cells = cell_measurements(labels, lin, calibration=cal)
    tracks = track_measurements(labels, lin, cal, cells=cells)
    fig = figure if figure is not None else Figure(figsize=(9, 6.5), layout="constrained")
    fig.clear()
    axes = fig.subplots(2, 2)
    T = len(labels)
    time = np.arange(T) * cal.dt
    tu, lu = cal.duration_unit, cal.length_unit

    count = np.bincount(cells["frame"], minlength=T)
    ax = axes[0, 0]
    ax.plot(time, count, color="#1f77b4")
    ax.set(title="Cells per frame", xlabel=f"time ({tu})", ylabel="cells")

    ax = axes[0, 1]
    if len(lin):
        ax.hist(tracks["duration"], bins=min(30, max(5, len(lin) // 3)), color="#2ca02c")
    ax.set(title=f"Track duration ({len(lin)} tracks)", xlabel=f"duration ({tu})", ylabel="tracks")

    ax = axes[1, 0]
    speed = cells["speed"][np.isfinite(cells["speed"])]
    if len(speed):
        ax.hist(speed, bins=30, color="#ff7f0e")
    ax.set(title="Cell speed", xlabel=f"speed ({lu}/{tu.rstrip('s') if tu == 'frames' else tu})",
           ylabel="cell steps")

    ax = axes[1, 1]
    daughters = lin[lin[:, 3] > 0]
    division_frames = np.unique(np.column_stack([daughters[:, 3], daughters[:, 1]]), axis=0)[:, 1] \
        if len(daughters) else np.zeros(0, np.int64)
    per_frame = np.bincount(division_frames, minlength=T)[:T]
    ax.bar(time, per_frame, width=cal.dt * 0.9, color="#d62728")
    ax.set(title=f"Divisions ({len(division_frames)})", xlabel=f"time ({tu})", ylabel="divisions")
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig, path, overwrite: bool = False) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix: .png, .svg, .pdf), atomically."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: save plots as {', '.join(FORMATS)} (the suffix picks the format)")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path, suffix=path.suffix) as f:
        fig.savefig(f, dpi=150, format=path.suffix[1:].lower())
    return path
