"""Clustering grid bound on crowded movies: SEG/DET/TRA and clustering time of ``track_movie``
with ``ClusterParams.max_points`` at several values, on synthetic movies of small touching
nuclei, at the factor ``--scale auto`` measures (docs/method.md, "Clustering").

    python benchmarks/crowded.py [--cells 150 400] [--max-points 10000 40000 none]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from napari_cosine_tracker.core.cellsize import stream_at_scale
from napari_cosine_tracker.core.io import write_ctc_gt, write_ctc_result
from napari_cosine_tracker.core.metrics import evaluate
from napari_cosine_tracker.core.pipeline import default_params, track_movie
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import machine_info  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[150, 400])
    ap.add_argument("--max-points", nargs="+", default=["10000", "40000", "none"])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", type=int, default=640)
    ap.add_argument("--radius", type=float, nargs=2, default=[8.0, 12.0])
    args = ap.parse_args(argv)
    print(json.dumps(machine_info()))
    work = Path(tempfile.mkdtemp())
    for n_cells in args.cells:
        m = make_synthetic_movie(n_frames=args.frames, shape=(args.size,) * 2, n_cells=n_cells,
                                 radius=tuple(args.radius), seed=7)
        counts = [len(np.unique(lab)) - 1 for lab in m.labels]
        gt = work / f"{n_cells}_GT"
        write_ctc_gt(gt, m.labels, m.lineage)
        stream, est = stream_at_scale(m.images, "auto", device="cpu")
        print(f"\n{n_cells} cells at the start, {min(counts)}-{max(counts)} per frame. {est.describe()}")
        cp, tp = default_params(stream.config)
        for v in args.max_points:
            mp = None if v == "none" else int(v)
            res = track_movie(m.images, params=dataclasses.replace(cp, max_points=mp),
                              track_params=tp, stream=stream)
            out = work / f"{n_cells}_{v}_RES"
            write_ctc_result(out, res.labels, res.lineage)
            s = evaluate(out, gt, ["SEG", "DET", "TRA"])
            print(f"max_points {v:>6}: SEG {s['SEG']:.3f} DET {s['DET']:.3f} TRA {s['TRA']:.3f}  "
                  f"clustering {res.timings['cluster_s']:.1f} s, model {res.timings['model_s']:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
