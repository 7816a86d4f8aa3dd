"""Draw a training loss curve (loss.csv of a model folder) as an SVG, with no plotting library.

    python benchmarks/plot_loss.py src/napari_cosine_tracker/models/default/loss.csv docs/loss_curve.svg
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np


def plot(csv_path, svg_path, width=640, height=320, smooth=25) -> Path:
    with open(csv_path) as fh:
        rows = list(csv.DictReader(fh))
    steps = np.array([int(r["step"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    minutes = np.array([float(r["elapsed_s"]) for r in rows]) / 60
    kernel = np.ones(min(smooth, len(loss))) / min(smooth, len(loss))
    ema = np.convolve(np.pad(loss, (len(kernel) - 1, 0), mode="edge"), kernel, mode="valid")
    left, bottom, right, top = 60, 40, 20, 20
    pw, ph = width - left - right, height - top - bottom
    lo, hi = 0.0, float(np.percentile(loss, 99)) * 1.05

    def xy(s, v):
        return left + pw * (s - steps[0]) / max(1, steps[-1] - steps[0]), top + ph * (1 - (min(v, hi) - lo) / (hi - lo))

    def path(values):
        return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(xy(s, v) for s, v in zip(steps, values)))

    ticks_y = np.linspace(lo, hi, 5)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<path d="{path(loss)}" fill="none" stroke="#9ecae1" stroke-width="1"/>',
        f'<path d="{path(ema)}" fill="none" stroke="#08519c" stroke-width="2"/>',
        f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>',
    ]
    for v in ticks_y:
        _, y = xy(steps[0], v)
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for s in np.linspace(steps[0], steps[-1], 6).astype(int):
        x, _ = xy(s, lo)
        m = minutes[np.searchsorted(steps, s)] if s <= steps[-1] else minutes[-1]
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 15}" text-anchor="middle">{s}</text>')
        parts.append(f'<text x="{x:.1f}" y="{top + ph + 28}" text-anchor="middle" fill="#666">{m:.0f} min</text>')
    stages = [r.get("stage") for r in rows]
    for i in range(1, len(rows)):
        if stages[i] != stages[i - 1]:  # e.g. pretraining, then a fine-tune on other data
            x, _ = xy(steps[i], lo)
            parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#e6550d" stroke-dasharray="4,3"/>')
            parts.append(f'<text x="{x + 4:.1f}" y="{top + 12}" fill="#e6550d">{stages[i]}</text>')
    parts.append(f'<text x="{left + pw / 2}" y="{top - 5}" text-anchor="middle">cosine embedding loss per training step (light) and its {len(kernel)}-step mean (dark); x: step and wall time</text>')
    parts.append("</svg>")
    svg_path = Path(svg_path)
    svg_path.write_text("\n".join(parts))
    return svg_path


if __name__ == "__main__":
    plot(sys.argv[1], sys.argv[2])
