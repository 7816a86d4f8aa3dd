"""Accuracy on synthetic movies no model was trained on, for choosing between models.

Each seed's movie (``make_synthetic_movie``, 24 frames of 256² by default; training used
seeds 1-8) is tracked with each model's own recommended clustering (``track --scale 1.5``:
the synthetic nuclei are smaller than the training cells) and scored with the official
measures. Prints SEG / DET / TRA per seed and their mean over the seeds, per model.

    python benchmarks/synthetic_accuracy.py [--models shipped DIR ...] [--seeds 0 50 51]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile

from napari_cosine_tracker.core.cli import main as cli
from napari_cosine_tracker.core.io import write_ctc_gt
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import machine  # noqa: E402

MEASURES = ("SEG", "DET", "TRA")


def score_model(model: str, seeds, n_frames: int, size: int, scale: str, work: Path, tag: str,
                cells: int = 10, radius: tuple[float, float] = (14, 22)) -> dict:
    """SEG / DET / TRA of ``model`` per seed and their mean; movies are made once in ``work``,
    results go to ``work/<tag>_seed<seed>_RES``."""
    scores = {}
    for seed in seeds:
        movie_tif, gt = work / f"seed{seed}.tif", work / f"seed{seed}_GT"
        if not movie_tif.exists():
            movie = make_synthetic_movie(n_frames=n_frames, shape=(size, size), seed=seed, n_cells=cells,
                                         radius=radius)
            tifffile.imwrite(movie_tif, movie.images)
            write_ctc_gt(gt, movie.labels, movie.lineage)
        res = work / f"{tag}_seed{seed}_RES"
        args = ["track", str(movie_tif), "-o", str(res), "--scale", scale, "--quiet"]
        if model != "shipped":
            args += ["--weights", model]
        if cli(args) != 0:
            raise RuntimeError(f"track failed for {model}, seed {seed}")
        s = evaluate(res, gt, list(MEASURES))
        scores[seed] = {m: s[m] for m in MEASURES}
    scores["mean"] = {m: float(np.mean([scores[s][m] for s in seeds])) for m in MEASURES}
    return scores


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shipped"], help="model folders ('shipped': the packaged one)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 50, 51])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--scale", default="1.5", help="frame resize factor for track (or auto)")
    parser.add_argument("--cells", type=int, default=10, help="cells in the first frame")
    parser.add_argument("--radius", nargs=2, type=float, default=[14, 22], metavar=("LO", "HI"),
                        help="semi-axes of a grown nucleus in pixels; small crowded nuclei "
                             "(--size 512 --cells 150 --radius 6 9) stand in for a nuclei type "
                             "with no data here")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args(argv)

    out = {"machine": machine(), "seeds": args.seeds, "cells": args.cells, "radius": args.radius,
           "size": args.size, "models": {}}
    print(f"machine: {out['machine']}")
    with tempfile.TemporaryDirectory(prefix="nct-synth-") as tmp:
        for i, model in enumerate(args.models):
            out["models"][model] = score_model(model, args.seeds, args.frames, args.size, args.scale, Path(tmp),
                                               f"model{i}", args.cells, tuple(args.radius))
    print(f"{'model':<40} {'seed':>6} " + " ".join(f"{m:>6}" for m in MEASURES))
    for model, per in out["models"].items():
        for seed, s in per.items():
            print(f"{model[-40:]:<40} {seed!s:>6} " + " ".join(f"{s[m]:.3f}".rjust(6) for m in MEASURES))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
