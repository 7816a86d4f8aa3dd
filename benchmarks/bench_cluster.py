"""Time the pair clustering on a 512x512 frame pair at about 25 % foreground.

Prints the machine, then for each backend: the first clustering (features + single-linkage
tree + labels), a ``min_cluster_size`` change (re-label from the cached tree), a
``min_samples`` change (new tree), and, for reference, plain HDBSCAN fitted from scratch on
every foreground pixel (``--no-full`` skips it: it takes tens of seconds), with the accuracy
of each against the ground truth.

    python benchmarks/bench_cluster.py [--size 512] [--no-full] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

from napari_cosine_tracker.core.cluster import (
    ClusterParams,
    PairClustering,
    synthetic_embeddings,
)
from napari_cosine_tracker.core.synthetic import make_synthetic_movie


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def seg_like(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """CTC-SEG-like score (mean IoU of the >50 %-overlap match per true cell) and the
    fraction of true cells matched with IoU > 0.5."""
    g = gt.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    ng, npred = int(g.max()) + 1, int(p.max()) + 1
    inter = np.bincount(g * npred + p, minlength=ng * npred).reshape(ng, npred)
    sg, sp = inter.sum(1), inter.sum(0)
    ious = []
    for i in range(1, ng):
        if sg[i] == 0:
            continue
        j = int(np.argmax(inter[i, 1:])) + 1 if npred > 1 else 0
        ok = j > 0 and inter[i, j] > 0.5 * sg[i]
        ious.append(inter[i, j] / (sg[i] + sp[j] - inter[i, j]) if ok else 0.0)
    ious = np.asarray(ious)
    return float(ious.mean()), float((ious > 0.5).mean())


def score(movie, res) -> str:
    s = [seg_like(movie.labels[i], lab) for i, lab in enumerate((res.labels_a, res.labels_b))]
    return f"SEG~{np.mean([a for a, _ in s]):.3f} matched {np.mean([b for _, b in s]):.1%}"


def timed(fn, repeat=1):
    ts, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-full", action="store_true", help="skip HDBSCAN on every pixel")
    ap.add_argument("--backends", default="hdbscan,fast_hdbscan")
    a = ap.parse_args(argv)

    try:
        n_aff = len(os.sched_getaffinity(0))
    except AttributeError:
        n_aff = os.cpu_count()
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical cores ({n_aff} usable), "
          f"{platform.python_implementation()} {platform.python_version()}; load average "
          f"{load} (times scale with other work on the machine)")

    n_cells = int(230 * (a.size / 512) ** 2)
    movie = make_synthetic_movie(n_frames=2, shape=(a.size, a.size), n_cells=n_cells,
                                 radius=(8, 14), seed=a.seed)
    emb = synthetic_embeddings(movie.labels, 16, seed=a.seed + 1)
    fg = (movie.labels > 0).mean()
    print(f"pair: {a.size}x{a.size}, d=16, foreground {fg:.1%} "
          f"({int((movie.labels > 0).sum())} px in both frames), "
          f"{len(np.unique(movie.labels[0])) - 1} cells per frame")

    # Compile the numba kernels once (cached on disk afterwards), off the clock.
    small = synthetic_embeddings(movie.labels[:, :96, :96], 16, seed=0)
    for b in a.backends.split(","):
        PairClustering(small[0], small[1], ClusterParams(backend=b)).run()

    base = ClusterParams()
    for backend in a.backends.split(","):
        p = ClusterParams(backend=backend)
        pc = PairClustering(emb[0], emb[1], p)
        t_first, res = timed(pc.run)
        tm = dict(pc.timings)
        print(f"\n[{backend}] grid step {res.step}, {res.n_points} points; first clustering "
              f"{t_first * 1e3:.0f} ms (features {tm['features'] * 1e3:.0f}, tree "
              f"{tm['tree'] * 1e3:.0f}, labels {tm['relabel'] * 1e3:.0f}); {score(movie, res)}")
        for mcs in (60, 200, base.min_cluster_size):
            t, res = timed(lambda: pc.run(min_cluster_size=mcs), repeat=5)
            print(f"  min_cluster_size -> {mcs:4d}: re-label {t * 1e3:6.1f} ms (median of 5); "
                  f"{score(movie, res)}")
        for ms in (4, 12, base.min_samples):
            t, res = timed(lambda: pc.run(min_samples=ms))
            print(f"  min_samples -> {ms:3d}: {t * 1e3:6.0f} ms (tree "
                  f"{pc.timings['tree'] * 1e3:.0f} ms); {score(movie, res)}")

    if not a.no_full:
        import hdbscan

        g = PairClustering(emb[0], emb[1], ClusterParams(grid_step=1, max_points=None))
        g._ensure(g.params)  # features of every foreground pixel (and its tree, timed below)
        feats = g._grid.features
        t, _ = timed(lambda: hdbscan.HDBSCAN(
            min_samples=base.min_samples, min_cluster_size=base.min_cluster_size,
            core_dist_n_jobs=os.cpu_count() or 1).fit(feats))
        print(f"\nplain hdbscan.HDBSCAN on all {feats.shape[0]} foreground pixels, from "
              f"scratch: {t:.1f} s")
        res = g.run()
        print(f"same pixels through PairClustering (grid step 1): tree "
              f"{g.timings['tree']:.1f} s; {score(movie, res)}")


if __name__ == "__main__":
    main()
