"""Speed and memory of the whole method, as ratios measured in one run on one machine.

    python benchmarks/run.py [--quick] [--json OUT] [--model DIR] [--data DIR] [--threads N]

Sections (each number is measured in this run; compare ratios, not absolute times across
machines):

* **machine**: CPU model, cores, SIMD, clock, GPU, library versions, load average.
* **model**: ms per frame of the model (default: the shipped one) on 256², 512² and 1024²
  movie frames through :class:`EmbeddingStream` (the model runs at its pixel scale), FLOPs per
  frame counted by ``torch.utils.flop_counter``, achieved FLOP/s as a fraction of the best
  throughput torch reaches in this run on a 3x3 64->64 convolution of a 256² input
  (``model_peak_fraction``, at 512²) and of the theoretical FMA peak of the cores. The
  previous memory layout (NCHW) and weights reordered by oneDNN on every call (before weight
  packing) are timed beside the default (channels-last, packed weights).
* **tune**: live tuning of one 512x512 frame pair (embedding pixels; the model's embeddings of
  two GOWT1 frames when the shared data is there, synthetic embeddings otherwise): latency of
  a ``min_cluster_size`` change, of a ``min_samples`` change, and HDBSCAN on every foreground
  pixel from scratch, with the agreement of the fast path with the latter.
* **pipeline**: seconds per frame of ``track_movie`` on a window of a shared CTC sequence (a
  synthetic movie with ``--quick``) with the split model / clustering / tracking, beside the
  classical reference (Otsu + watershed + IoU linking); the full run also scores both, and
  clustering every pixel, with the official CTC measures.
* **memory**: peak resident memory of a subprocess tracking a long synthetic movie with
  ``store_dir`` (frames on disk), over that of a short one (target <= 1.2).

``--quick`` runs every section on small inputs in well under a minute (CI keeps it working);
the full run takes about a quarter of an hour on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from napari_cosine_tracker.core.cluster import ClusterParams, PairClustering, synthetic_embeddings
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.io import Movie, read_movie, slice_ctc_sequence, write_ctc_result
from napari_cosine_tracker.core import model as model_module
from napari_cosine_tracker.core.model import (
    ModelConfig,
    RecurrentHourglass,
    default_model_dir,
    load_model,
    read_model_config,
    save_model,
)
from napari_cosine_tracker.core.pipeline import default_params, track_movie
from napari_cosine_tracker.core.reference import track_classical
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "ctc"
# Architecture of the shipped model, for a random stand-in when the weights are absent.
SHIPPED_ARCH = dict(filters=128, levels=3, stacks=2, embedding_dim=8, space_to_depth=4)
# The model shipped before (full pixels, 32 filters, 5 levels): the same FLOPs per frame, timed
# beside the shipped one to show what the 4x4 blocks buy.
PREVIOUS_ARCH = dict(filters=32, levels=5, stacks=2, embedding_dim=8)


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------


def _cpuinfo() -> dict:
    info = {"model": platform.processor() or platform.machine(), "flags": set(), "mhz": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name" and info["model"] in ("", platform.machine(), platform.processor()):
                info["model"] = value.strip()
            elif key == "flags" and not info["flags"]:
                info["flags"] = set(value.split())
            elif key == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
    except OSError:
        pass
    try:  # the nominal maximum when the kernel exposes it (not on most VMs)
        khz = int(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text())
        info["mhz"] = khz / 1000.0
    except (OSError, ValueError):
        pass
    return info


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict:
    cpu = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    flags = cpu["flags"]
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags or "avx" in flags else 4
    fma = "fma" in flags or "avx512f" in flags
    ghz = (cpu["mhz"] or 0.0) / 1000.0
    # Two FMA pipes per core (every x86 core with AVX2 since Haswell / Zen 2), 2 FLOPs each.
    per_cycle = 2 * lanes * (2 if fma else 1)
    peak = usable * ghz * per_cycle if ghz else None
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "cpu": cpu["model"],
        "cores": usable,
        "logical_cpus": os.cpu_count(),
        "simd": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse/other",
        "fma": fma,
        "ghz": round(ghz, 3) if ghz else None,
        "fp32_flops_per_cycle_per_core": per_cycle,
        "theoretical_peak_gflops": round(peak, 1) if peak else None,
        "gpu": gpu,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {n: _version(n) for n in (
            "torch", "numpy", "scipy", "scikit-image", "hdbscan", "fast-hdbscan", "numba",
            "napari-cosine-tracker")},
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _times(fn, repeat: int) -> list[float]:
    ts = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return ts


def _median_time(fn, repeat: int) -> float:
    return statistics.median(_times(fn, repeat))


def _best_time(fn, repeat: int) -> float:
    """Best of ``repeat`` calls after one warm-up call (weight layouts, buffers)."""
    fn()
    return min(_times(fn, repeat))


def _model_folder(path: str | None, tmp: Path) -> tuple[Path, str]:
    """The model to time: ``path``, else the shipped model, else random weights of the
    shipped architecture (timings do not depend on the weights)."""
    if path:
        return Path(path), str(path)
    shipped = default_model_dir()
    if (shipped / "weights.safetensors").is_file():
        return shipped, "shipped"
    torch.manual_seed(0)
    folder = tmp / "random_model"
    save_model(RecurrentHourglass(ModelConfig(**SHIPPED_ARCH)), folder,
               {"preprocessing": {"pixel_scale": 0.5}})
    return folder, "random weights of the shipped architecture (shipped model absent)"


def _previous_model_folder(model_dir: Path, tmp: Path) -> Path:
    """Random weights of the previously shipped architecture with the model's pixel scale
    (timings do not depend on the weights)."""
    torch.manual_seed(0)
    folder = tmp / "previous_model"
    pre = read_model_config(model_dir).get("preprocessing", {"pixel_scale": 0.5})
    save_model(RecurrentHourglass(ModelConfig(**PREVIOUS_ARCH)), folder, {"preprocessing": pre})
    return folder


def _frames(size: int, n: int, seed: int = 0) -> np.ndarray:
    cells = max(4, int(40 * (size / 512) ** 2))
    return make_synthetic_movie(n_frames=n, shape=(size, size), n_cells=cells, seed=seed,
                                divisions=False).images


# --------------------------------------------------------------------------------------------
# model throughput
# --------------------------------------------------------------------------------------------


def conv_reference(repeat: int, sizes=(256,)) -> dict:
    """Best GFLOP/s torch reaches on a 3x3 64->64 convolution (either memory layout)."""
    out = {}
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    with torch.inference_mode():
        for size in sizes:
            x = torch.randn(1, 64, size, size)
            flops = 2 * 64 * 64 * 9 * size * size
            best = {}
            for layout, fmt in (("nchw", torch.contiguous_format), ("channels_last", torch.channels_last)):
                c = conv.to(memory_format=fmt)
                xi = x.contiguous(memory_format=fmt)
                best[layout] = flops / _best_time(lambda: c(xi), repeat) / 1e9
            out[size] = {"gflops": max(best.values()), "by_layout": best,
                         "ms": flops / max(best.values()) / 1e6}
    return out


# 3x3 convolutions of the shapes a recurrent hourglass is built of: (in, out) channels.
CONV_SHAPES = ((32, 32), (64, 32), (64, 64), (128, 128))


def conv_shapes(repeat: int, sizes) -> dict:
    """GFLOP/s of each ``CONV_SHAPES`` convolution alone on square maps of ``sizes`` (channels
    last, one image, best of ``repeat``) and its fraction of the reference convolution, timed
    in turns with it (this machine's speed drifts by tens of percent within minutes): the
    ceiling of a network built of such convolutions, whatever else it does."""
    def conv_call(cin, cout, size):
        conv = torch.nn.Conv2d(cin, cout, 3, padding=1).eval().to(memory_format=torch.channels_last)
        x = torch.randn(1, cin, size, size).contiguous(memory_format=torch.channels_last)
        return (lambda: conv(x)), 2 * cin * cout * 9 * size * size

    out = {}
    with torch.inference_mode():
        ref, ref_flops = conv_call(64, 64, 256)
        for cin, cout in CONV_SHAPES:
            row = out[f"{cin}->{cout}"] = {}
            for size in sizes:
                fn, flops = conv_call(cin, cout, size)
                # Warm runs of each in turn, three rounds: the best of each is what a
                # convolution reaches with its input and weights in cache.
                t, t_ref = [], []
                for _ in range(3):
                    t.append(_best_time(fn, max(1, repeat // 3)))
                    t_ref.append(_best_time(ref, max(1, repeat // 3)))
                gflops = flops / min(t) / 1e9
                row[size] = {"gflops": gflops, "fraction_of_conv": gflops / (ref_flops / min(t_ref) / 1e9)}
    return out


def count_flops(config: ModelConfig, tiles) -> int:
    """FLOPs of one frame with a recurrent state (every ConvGRU convolution runs), counted by
    torch on shape-only (meta) tensors: exact, and free."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = RecurrentHourglass(config).eval()
    total = 0
    with torch.inference_mode():
        for h, w in tiles:
            x = torch.empty(1, config.in_channels, h, w, device="meta")
            _, state = model(x)
            with FlopCounterMode(display=False) as fc:
                model(x, state)
            total += int(fc.get_total_flops())
    return total


def _timed_pushes(stream, frames) -> tuple[list[float], list[int]]:
    """Seconds and page faults of ``stream.push`` for each frame after the first two (the zero
    state, then the first frame with a state: allocations, weight layouts)."""
    stream.push(frames[0])
    stream.push(frames[1])
    ts, faults = [], []
    for f in frames[2:]:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t0 = time.perf_counter()
        stream.push(f)
        ts.append(time.perf_counter() - t0)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return ts, faults


def _unpacked_weights():
    """The inference path as it was before weight packing: oneDNN reorders every plain weight
    tensor on every call."""
    return mock.patch.object(model_module, "_packed_weight", lambda weight, part, *_: model_module._part(weight, part))


def bench_model(model_dir: Path, sizes, repeat: int, device: str, layouts=("channels_last",),
                half: bool = False) -> dict:
    """ms per frame of each of ``layouts``: "channels_last" (the default), "nchw" and
    "unpacked" (channels-last with :func:`_unpacked_weights`), one after the other per size."""
    from napari_cosine_tracker.core.inference import _tiles

    model, config = load_model(model_dir, device=device)
    out = {}
    for size in sizes:
        frames = _frames(size, repeat + 2, seed=size)
        row = {}
        for layout in layouts:
            stream = EmbeddingStream(model=model, config=config, device=device, half=half,
                                     channels_last=layout != "nchw")
            with _unpacked_weights() if layout == "unpacked" else nullcontext():
                ts, _ = _timed_pushes(stream, frames)
            row[layout] = statistics.median(ts) * 1e3
            if "flops" not in row:
                ys, xs = stream.model_shape
                tiles = [(y1 - y0, x1 - x0)
                         for y0, y1, _, _ in _tiles(ys, stream.tile_size, stream.tile_overlap)
                         for x0, x1, _, _ in _tiles(xs, stream.tile_size, stream.tile_overlap)]
                row["flops"] = count_flops(model.config, tiles)
                row["model_shape"] = [ys, xs]
                row["tiles"] = len(tiles)
        row["ms"] = row[layouts[0]]
        row["gflops_per_s"] = row["flops"] / (row["ms"] / 1e3) / 1e9
        out[size] = row
    return out


_OP_GROUPS = {
    "convolution": ("conv", "mkldnn"),
    "gates and activations": ("sigmoid", "tanh", "add", "mul", "sub", "clamp", "relu"),
    "pool, upsample, pad, concat": ("pool", "upsample", "pad", "cat", "reflection", "replication"),
    "normalise and copies": ("norm", "div", "copy", "contiguous", "clone", "to"),
}


# Operators that run a convolution's arithmetic (the leaves of aten::conv2d; aten::thnn_conv2d
# only wraps the slow one).
_CONV_LEAVES = ("mkldnn::_convolution_pointwise", "aten::mkldnn_convolution", "aten::_slow_conv2d_forward")


def profile_model(model_dir: Path, size: int, reference_gflops: float | None = None, repeat: int = 5) -> dict:
    """Self CPU time of one frame's operators, grouped (where the time goes), and the same
    frame's convolutions timed one by one outside the model.

    The second part bounds what any scheduling of the other operators could win: if the
    frame did nothing but its convolutions, each as fast as it runs alone (warm caches,
    inputs reused), it would reach ``conv["alone_fraction"]`` of the conv reference.
    """
    model, config = load_model(model_dir, device="cpu")
    stream = EmbeddingStream(model=model, config=config, device="cpu")
    frames = _frames(size, 3, seed=size + 1)
    stream.push(frames[0])
    stream.push(frames[1])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        stream.push(frames[2])
        wall = time.perf_counter() - t0
    groups = dict.fromkeys(list(_OP_GROUPS) + ["other"], 0.0)
    convs = []
    for ev in prof.key_averages(group_by_input_shape=True):
        name = ev.key.lower()
        if not name.startswith(("aten::", "mkldnn::")):  # mkldnn:: = convolution + activation
            continue
        group = next((g for g, keys in _OP_GROUPS.items() if any(k in name for k in keys)), "other")
        groups[group] += ev.self_cpu_time_total / 1e3
        if ev.key in _CONV_LEAVES:
            convs.append((tuple(ev.input_shapes[0]), tuple(ev.input_shapes[1]), ev.count,
                          ev.self_cpu_time_total / 1e3))
    total = sum(groups.values())
    out = {"ms": groups, "fraction": {k: v / total for k, v in groups.items()} if total else {},
           "frame_wall_ms_profiled": wall * 1e3}
    flops = alone_ms = in_model_ms = 0.0
    with torch.inference_mode():
        for x_shape, w_shape, calls, ms in convs:
            x = torch.randn(x_shape).contiguous(memory_format=torch.channels_last)
            w = torch.randn(w_shape).contiguous(memory_format=torch.channels_last)
            # The model's own operator and packed weights, warm in cache.
            alone = _best_time(lambda: model_module.conv_act(x, w, None, "none"), repeat)
            flops += calls * 2 * math.prod(w_shape) * x_shape[-2] * x_shape[-1]
            alone_ms += calls * alone * 1e3
            in_model_ms += ms
    out["conv"] = {"flops": flops, "in_model_ms": in_model_ms, "alone_ms": alone_ms, "calls": sum(c[2] for c in convs)}
    if reference_gflops and alone_ms:
        out["conv"]["alone_fraction"] = flops / (alone_ms / 1e3) / 1e9 / reference_gflops
        out["conv"]["in_model_fraction"] = flops / (in_model_ms / 1e3) / 1e9 / reference_gflops
    return out


# --------------------------------------------------------------------------------------------
# live tuning
# --------------------------------------------------------------------------------------------


def _seg_like(ref: np.ndarray, pred: np.ndarray) -> float:
    """CTC-SEG-like: mean over reference objects of the IoU with the prediction that covers
    more than half of it (0 where none does)."""
    g = ref.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    ng, npr = int(g.max()) + 1, int(p.max()) + 1
    if ng <= 1:
        return float("nan")
    inter = np.bincount(g * npr + p, minlength=ng * npr).reshape(ng, npr)
    sg, sp = inter.sum(1), inter.sum(0)
    ious = []
    for i in range(1, ng):
        if sg[i] == 0:
            continue
        j = int(np.argmax(inter[i, 1:])) + 1 if npr > 1 else 0
        ok = j > 0 and inter[i, j] > 0.5 * sg[i]
        ious.append(inter[i, j] / (sg[i] + sp[j] - inter[i, j]) if ok else 0.0)
    return float(np.mean(ious)) if ious else float("nan")


def tune_pair(model_dir: Path, data: Path, quick: bool) -> tuple[np.ndarray, np.ndarray, dict]:
    """The frame pair to tune on: model embeddings of GOWT1 frames 0-1 (1024² movie pixels,
    512² embedding pixels at pixel scale 0.5), else synthetic embeddings."""
    model, config = load_model(model_dir, device="cpu")
    seq = data / "Fluo-N2DH-GOWT1" / "01"
    if not quick and seq.is_dir():
        movie = read_movie(seq)
        stream = EmbeddingStream(model=model, config=config, device="cpu")
        a = stream.push(movie[0])
        b = stream.push(movie[1])
        # As stored by the pipeline and the GUI session.
        a, b = (e.astype(np.float16).astype(np.float32) for e in (a, b))
        return a, b, {"source": f"model embeddings of {seq} frames 0-1", "truth": None}
    size = 160 if quick else 512
    n_cells = int(230 * (size / 512) ** 2)
    syn = make_synthetic_movie(n_frames=2, shape=(size, size), n_cells=n_cells, radius=(8, 14), seed=1)
    emb = synthetic_embeddings(syn.labels, model.config.embedding_dim, seed=2)
    return emb[0], emb[1], {"source": f"synthetic embeddings {size}x{size}", "truth": syn.labels}


def bench_tune(a, b, params: ClusterParams, truth, quick: bool) -> dict:
    fg = [int((e[0] < params.fg_threshold).sum()) for e in (a, b)]
    # Compile numba kernels (cached on disk afterwards) off the clock.
    PairClustering(a[:, :64, :64], b[:, :64, :64], params).run()
    pc = PairClustering(a, b, params)
    t_first = _median_time(pc.run, 1)
    first_timings = dict(pc.timings)
    fast = pc.run()
    mcs = params.min_cluster_size
    seq = [mcs * 3, mcs] * (3 if quick else 8)
    ts = []
    for v in seq:
        t0 = time.perf_counter()
        pc.run(min_cluster_size=v)
        ts.append(time.perf_counter() - t0)
    t_mcs = statistics.median(ts)
    ms = params.min_samples
    ts = []
    for v in [ms + 4, ms] * (1 if quick else 2):
        t0 = time.perf_counter()
        pc.run(min_samples=v)
        ts.append(time.perf_counter() - t0)
    t_ms = statistics.median(ts)
    full_params = replace(params, grid_step=1, max_points=None)
    full_pc = PairClustering(a, b, full_params)
    t_full = _median_time(full_pc.run, 1)
    full = full_pc.run()
    out = {
        "pair_shape": list(a.shape[1:]),
        "foreground_px": fg,
        "grid_points": fast.n_points,
        "grid_step": fast.step,
        "first_ms": t_first * 1e3,
        "first_split_ms": {k: v * 1e3 for k, v in first_timings.items()},
        "min_cluster_size_ms": t_mcs * 1e3,
        "min_samples_ms": t_ms * 1e3,
        "every_pixel_points": full.n_points,
        "every_pixel_ms": t_full * 1e3,
        "every_pixel_split_ms": {k: v * 1e3 for k, v in full_pc.timings.items()},
        # SEG-like agreement of the fast path with clustering every pixel (reference).
        "agreement_with_every_pixel": float(np.nanmean(
            [_seg_like(full.labels_a, fast.labels_a), _seg_like(full.labels_b, fast.labels_b)])),
    }
    if truth is not None:
        out["seg_like_fast"] = float(np.nanmean([_seg_like(truth[0], fast.labels_a),
                                                 _seg_like(truth[1], fast.labels_b)]))
        out["seg_like_every_pixel"] = float(np.nanmean([_seg_like(truth[0], full.labels_a),
                                                        _seg_like(truth[1], full.labels_b)]))
    return out


# --------------------------------------------------------------------------------------------
# whole pipeline
# --------------------------------------------------------------------------------------------


def _score(result, gt_dir: Path | None, work: Path, name: str) -> dict | None:
    if gt_dir is None:
        return None
    from napari_cosine_tracker.core.metrics import evaluate

    res = work / f"{name}_RES"
    write_ctc_result(res, result.labels, result.lineage)
    s = evaluate(res, gt_dir, metrics=["SEG", "DET", "TRA"])
    return {k: s.get(k) for k in ("SEG", "DET", "TRA")}


def bench_pipeline(model_dir: Path, data: Path, quick: bool, work: Path, frames: int) -> dict:
    seq = data / "Fluo-N2DH-SIM+" / "01"
    if not quick and seq.is_dir():
        n = len(list(seq.glob("t*.tif")))
        start = max(0, n - frames)  # the last frames: held out of the model's training
        movie_dir, gt_dir = slice_ctc_sequence(seq, start, n, work / "window")
        movie = read_movie(movie_dir)
        source = f"{seq} frames {start}-{n - 1}"
    else:
        movie = make_synthetic_movie(n_frames=frames, shape=(192, 192), n_cells=8, seed=4).images
        gt_dir = None
        source = f"synthetic movie {frames}x192x192"
    n = len(movie)
    model, config = load_model(model_dir, device="cpu")
    params, track_params = default_params(config)

    def run(p, name, overlap=False, threads=None):
        before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            stream = EmbeddingStream(model=model, config=config, device="cpu")
            with tempfile.TemporaryDirectory(dir=work) as store:
                t0 = time.perf_counter()
                result = track_movie(movie, params=p, track_params=track_params, stream=stream,
                                     store_dir=store, overlap=overlap)
                seconds = time.perf_counter() - t0
                scores = _score(result, gt_dir, work, name)
        finally:
            torch.set_num_threads(before)
        split = {k.replace("_s", "_s_per_frame"): v / n for k, v in result.timings.items()}
        split["other_s_per_frame"] = seconds / n - sum(split.values())
        return {"s_per_frame": seconds / n, "split": split, "tracks": len(result.lineage),
                "scores": scores}

    out = {"source": source, "frames": n, "shape": list(movie.shape[1:]), "cosine": run(params, "cosine")}
    if (os.cpu_count() or 1) >= 2:
        # Model on all cores but one while the spare one builds the previous pair's tree.
        threads = max(1, torch.get_num_threads() - 1)
        out["cosine_overlap"] = dict(run(params, "cosine_overlap", overlap=True, threads=threads),
                                     torch_threads=threads)
    t0 = time.perf_counter()
    ref = track_classical(movie, track_params)
    seconds = time.perf_counter() - t0
    out["reference"] = {"s_per_frame": seconds / n, "tracks": len(ref.lineage),
                        "scores": _score(ref, gt_dir, work, "reference")}
    if gt_dir is not None:
        every = run(replace(params, grid_step=1, max_points=None), "every_pixel")
        out["cosine_every_pixel"] = every
    return out


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


class BlobMovie(Movie):
    """A synthetic movie rendered on demand (nothing kept): bright elliptic nuclei moving on
    closed orbits over a noisy background, so a long movie costs no memory of its own."""

    def __init__(self, n_frames: int, size: int, n_cells: int = 40, seed: int = 0):
        super().__init__((n_frames, size, size), np.uint16)
        rng = np.random.default_rng(seed)
        self.centre = rng.uniform(0.12, 0.88, (n_cells, 2)) * size
        self.radius = rng.uniform(9, 15, (n_cells, 2))
        self.orbit = rng.uniform(4, 14, n_cells)
        self.omega = rng.uniform(0.02, 0.06, n_cells) * rng.choice([-1, 1], n_cells)
        self.phase = rng.uniform(0, 2 * np.pi, n_cells)
        self.seed = seed

    def _read(self, t):
        size = self.shape[1]
        img = np.zeros((size, size), np.float32)
        angle = self.omega * t + self.phase
        pos = self.centre + self.orbit[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        for (cy, cx), (ry, rx) in zip(pos, self.radius):
            y0, y1 = max(0, int(cy - ry) - 1), min(size, int(cy + ry) + 2)
            x0, x1 = max(0, int(cx - rx) - 1), min(size, int(cx + rx) + 2)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            img[y0:y1, x0:x1][inside] = 1000.0
        noise = np.random.default_rng((self.seed, t)).normal(100.0, 30.0, img.shape)
        return np.clip(img + noise, 0, 65535).astype(np.uint16)


def _peak_rss_mib() -> float:
    """This process's own peak resident memory (MiB).

    Not ``ru_maxrss`` on Linux: the kernel carries a parent's peak over fork and exec into the
    child's, so every child of a 1.3 GB benchmark process read 1.3 GB, whatever it used.
    ``VmHWM`` belongs to the process's own address space.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, kB elsewhere
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def _memory_child(args) -> int:
    """Track a BlobMovie with frames kept on disk; print peak RSS (MiB) as JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    movie = BlobMovie(args.mem_frames, args.mem_size)
    with tempfile.TemporaryDirectory(prefix="nct-mem-") as store:
        t0 = time.perf_counter()
        result = track_movie(movie, model_dir=args.model, device="cpu", store_dir=store)
        seconds = time.perf_counter() - t0
        tracks = len(result.lineage)
    print(json.dumps({"peak_rss_mib": _peak_rss_mib(), "seconds": seconds, "tracks": tracks}))
    return 0


def _anon_rss_mib() -> float:
    """Anonymous resident memory (heap, not file pages the OS can drop), MiB; Linux only."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


class AnonPeak:
    """This process's peak anonymous memory (MiB, :func:`_anon_rss_mib`), sampled every
    ``every`` seconds by a thread from construction until :meth:`stop`, which returns it."""

    def __init__(self, every: float = 0.05):
        import threading

        self.peak = 0.0
        self._done = threading.Event()
        threading.Thread(target=self._sample, args=(every,), daemon=True).start()

    def _sample(self, every: float) -> None:
        while not self._done.wait(every):
            self.peak = max(self.peak, _anon_rss_mib())

    def stop(self) -> float:
        self._done.set()
        self.peak = max(self.peak, _anon_rss_mib())
        return self.peak


def _widget_memory_child(args) -> int:
    """The widget's code path (core.workflow.RunController.run_job on a TrackingSession, the
    result copied into the Labels layer's buffer) on a BlobMovie; print peak memory as JSON.

    The session's memory budget is scaled with the frame area (``--mem-budget``), so a small
    movie takes the path a 1024² one takes at the default budget."""
    from napari_cosine_tracker.core.pipeline import label_buffer
    from napari_cosine_tracker.core.workflow import RunController, RunDone

    if args.threads:
        torch.set_num_threads(args.threads)
    movie = BlobMovie(args.mem_frames, args.mem_size)
    peak = AnonPeak()
    import napari_cosine_tracker.core.buffers as buffers

    buffers.MEMORY_BUDGET_BYTES = int(args.mem_budget)
    layer = label_buffer(movie.shape, budget=int(args.mem_budget))  # the widget's layer data
    ctl = RunController()
    t0 = time.perf_counter()
    job = ctl.run_job(movie, model_dir=args.model, device="cpu")
    try:
        while True:
            next(job)
    except StopIteration as stop:
        res = stop.value
    assert isinstance(res, RunDone)
    for t in range(len(movie)):  # as the widget shows the result in its layer
        layer[t] = res.labels[t]
    seconds = time.perf_counter() - t0
    print(json.dumps({"peak_rss_mib": _peak_rss_mib(), "peak_anon_mib": peak.stop(),
                      "seconds": seconds, "tracks": len(res.lineage),
                      "on_disk": bool(ctl.session.on_disk)}))
    return 0


def bench_widget_memory(model_dir: Path, long_frames: int, short_frames: int, size: int,
                        threads: int) -> dict:
    """Peak memory of the widget's code path for a short and a long movie (see
    :func:`_widget_memory_child`), one after the other; ratio of the anonymous peaks."""
    budget = int(256 * 2**20 * (size / 1024) ** 2)
    out = {"size": size, "memory_budget_bytes": budget}
    for name, n in (("short", short_frames), ("long", long_frames)):
        cmd = [sys.executable, __file__, "--widget-memory-child", "--mem-frames", str(n),
               "--mem-size", str(size), "--model", str(model_dir), "--threads", str(threads),
               "--mem-budget", str(budget)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"widget memory run of {n} frames failed:\n{proc.stderr[-2000:]}")
        out[name] = dict(json.loads(proc.stdout.strip().splitlines()[-1]), frames=n)
    out["ratio"] = out["long"]["peak_anon_mib"] / out["short"]["peak_anon_mib"]
    out["ratio_rss"] = out["long"]["peak_rss_mib"] / out["short"]["peak_rss_mib"]
    return out


def _allocator_child(args) -> int:
    """Time ``EmbeddingStream.push`` at each of ``--alloc-sizes`` in this fresh process (the
    parent sets ``NCT_KEEP_FREED_MEMORY``); print ms and page faults per frame as JSON."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = load_model(args.model, device="cpu")
    out = {}
    for size in args.alloc_sizes:
        frames = _frames(size, args.alloc_frames + 2, seed=size)
        ts, faults = _timed_pushes(EmbeddingStream(model=model, config=config, device="cpu"), frames)
        out[size] = {"ms": statistics.median(ts) * 1e3, "page_faults": statistics.median(faults)}
    print(json.dumps(out))
    return 0


def bench_allocator(model_dir: Path, sizes, frames: int, rounds: int, threads: int) -> dict:
    """The model with glibc's default allocator settings against freed memory kept for reuse
    (``core.devices.keep_freed_memory``): fresh processes in turns, medians over the rounds."""
    runs = {"default": [], "kept": []}
    for _ in range(rounds):
        for name, flag in (("default", "0"), ("kept", "1")):
            cmd = [sys.executable, __file__, "--allocator-child", "--alloc-sizes", *map(str, sizes),
                   "--alloc-frames", str(frames), "--model", str(model_dir), "--threads", str(threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env=dict(os.environ, NCT_KEEP_FREED_MEMORY=flag))
            if proc.returncode != 0:
                raise RuntimeError(f"allocator run ({name}) failed:\n{proc.stderr[-2000:]}")
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {}
    for size in sizes:
        row = {name: {k: statistics.median(r[str(size)][k] for r in rs) for k in ("ms", "page_faults")}
               for name, rs in runs.items()}
        row["speedup"] = row["default"]["ms"] / row["kept"]["ms"]
        out[size] = row
    return out


def bench_memory(model_dir: Path, long_frames: int, short_frames: int, size: int, threads: int) -> dict:
    """Peak RSS of two subprocesses, run side by side (only memory is measured here)."""
    out = {"size": size}
    procs = {}
    for name, n in (("short", short_frames), ("long", long_frames)):
        cmd = [sys.executable, __file__, "--memory-child", "--mem-frames", str(n), "--mem-size",
               str(size), "--model", str(model_dir), "--threads", str(threads)]
        procs[name] = (n, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for name, (n, proc) in procs.items():
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"memory run of {n} frames failed:\n{stderr[-2000:]}")
        out[name] = dict(json.loads(stdout.strip().splitlines()[-1]), frames=n)
    out["ratio"] = out["long"]["peak_rss_mib"] / out["short"]["peak_rss_mib"]
    return out


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _table(r: dict) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores ({m['simd']}, {m['ghz']} GHz reported), "
        f"GPU: {m['gpu'] or 'none'}; torch {m['versions']['torch']}, {m['torch_threads']} threads; "
        f"load average {m['load_average']}",
        f"model: {r['model_source']}",
        "",
        f"3x3 conv 64->64 at 256², best layout: {r['conv_reference_gflops']:.1f} GFLOP/s "
        f"(theoretical FMA peak {m['theoretical_peak_gflops']} GFLOP/s)",
        f"{'frame':>8} {'model px':>9} {'tiles':>5} {'ms/frame':>9} {'unpacked':>8} {'NCHW ms':>8} {'GFLOP':>7} "
        f"{'GFLOP/s':>8} {'of conv':>8} {'of peak':>8}",
    ]
    for size, row in r["model"].items():
        lines.append(
            f"{size:>6}^2 {'x'.join(map(str, row['model_shape'])):>9} {row['tiles']:>5} "
            f"{row['ms']:>9.0f} {row.get('unpacked', float('nan')):>8.0f} {row.get('nchw', float('nan')):>8.0f} "
            f"{row['flops'] / 1e9:>7.2f} "
            f"{row['gflops_per_s']:>8.1f} {row['fraction_of_conv']:>8.2f} "
            f"{row.get('fraction_of_peak') or float('nan'):>8.2f}")
    for size, row in r.get("model_previous", {}).items():
        lines.append(f"{size:>6}^2 previous architecture (full pixels, 32 filters, 5 levels): {row['ms']:.0f} ms, "
                     f"{row['flops'] / 1e9:.2f} GFLOP, {row['fraction_of_conv']:.2f} of conv")
    for size, row in r.get("allocator", {}).items():
        lines.append(f"{size:>6}^2 allocator: default {row['default']['ms']:.0f} ms "
                     f"({row['default']['page_faults']:.0f} page faults/frame), freed memory kept "
                     f"{row['kept']['ms']:.0f} ms ({row['kept']['page_faults']:.0f}): {row['speedup']:.2f}x")
    for shape, row in r.get("conv_shapes", {}).items():
        lines.append(f"conv {shape:>8} alone, of conv: " + ", ".join(
            f"{size}² {c['fraction_of_conv']:.2f}" for size, c in row.items()))
    for size in (256, 512):
        prof = r.get(f"model_profile_{size}")
        if not prof:
            continue
        lines.append(f"where a {size}² frame's time goes (operator self time): "
                     + ", ".join(f"{k} {v:.0%}" for k, v in prof["fraction"].items()))
        conv = prof.get("conv", {})
        if conv.get("alone_fraction"):
            lines.append(f"  its {conv['calls']} convolutions: {conv['in_model_ms']:.0f} ms in the model "
                         f"({conv['in_model_fraction']:.2f} of the conv reference), {conv['alone_ms']:.0f} ms "
                         f"each timed alone ({conv['alone_fraction']:.2f})")
    t = r["tune"]
    lines += [
        "",
        f"live tuning: {t['source']}, pair {t['pair_shape'][0]}x{t['pair_shape'][1]}, foreground "
        f"{sum(t['foreground_px'])} px, grid {t['grid_points']} points (step {t['grid_step']})",
        f"  first clustering              {t['first_ms']:10.0f} ms",
        f"  min_cluster_size change       {t['min_cluster_size_ms']:10.1f} ms   (target <= 50)",
        f"  min_samples change            {t['min_samples_ms']:10.0f} ms   (target <= 1000)",
        f"  HDBSCAN on every fg pixel     {t['every_pixel_ms']:10.0f} ms   ({t['every_pixel_points']} points)",
        f"  agreement fast vs every pixel (SEG-like) {t['agreement_with_every_pixel']:.3f}",
    ]
    if "seg_like_fast" in t:
        lines.append(f"  SEG-like vs truth: fast {t['seg_like_fast']:.3f}, every pixel "
                     f"{t['seg_like_every_pixel']:.3f}")
    p = r["pipeline"]
    c = p["cosine"]
    lines += [
        "",
        f"pipeline: {p['source']} ({p['shape'][0]}x{p['shape'][1]})",
        f"  track_movie           {c['s_per_frame']:7.2f} s/frame  (model {c['split']['model_s_per_frame']:.2f}, "
        f"cluster {c['split']['cluster_s_per_frame']:.2f}, track {c['split']['track_s_per_frame']:.2f}, "
        f"other {c['split']['other_s_per_frame']:.2f})",
        f"  classical reference   {p['reference']['s_per_frame']:7.2f} s/frame",
    ]
    if "cosine_overlap" in p:
        o = p["cosine_overlap"]
        lines.append(f"  track_movie, overlap  {o['s_per_frame']:7.2f} s/frame  (model on "
                     f"{o['torch_threads']} threads while a child process builds HDBSCAN trees; "
                     f"{c['s_per_frame'] / o['s_per_frame']:.2f}x)")
    for name in ("cosine", "cosine_overlap", "cosine_every_pixel", "reference"):
        entry = p.get(name) or {}
        if entry.get("scores"):
            s = entry["scores"]
            lines.append(f"  {name:<20} SEG {s['SEG']:.3f}  DET {s['DET']:.3f}  TRA {s['TRA']:.3f}"
                         f"  ({entry['s_per_frame']:.2f} s/frame)")
    mem = r["memory"]
    lines += [
        "",
        f"memory: peak RSS {mem['long']['peak_rss_mib']:.0f} MiB for {mem['long']['frames']} frames "
        f"of {mem['size']}² vs {mem['short']['peak_rss_mib']:.0f} MiB for {mem['short']['frames']}: "
        f"ratio {mem['ratio']:.3f} (target <= 1.2)",
    ]
    return "\n".join(lines)


def _speedup(before_ms: float, after_ms: float) -> str:
    ratio = before_ms / after_ms
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def _shapes_markdown(shapes: dict) -> list[str]:
    sizes = list(next(iter(shapes.values())))
    return (["| in -> out channels | " + " | ".join(f"{s}²" for s in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
            + [f"| {shape} | " + " | ".join(f"{row[s]['fraction_of_conv']:.2f}" for s in sizes) + " |"
               for shape, row in shapes.items()])


def markdown(r: dict) -> str:
    """The results as Markdown tables (for docs/benchmarks.md)."""
    m = r["machine"]
    v = m["versions"]
    out = [
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['simd']}, FMA, {m['ghz']} GHz reported), "
        f"GPU: {m['gpu'] or 'none'}; {m['torch_threads']} torch threads; torch {v['torch']}, "
        f"numpy {v['numpy']}, scipy {v['scipy']}, scikit-image {v['scikit-image']}, hdbscan "
        f"{v['hdbscan']}, fast-hdbscan {v['fast-hdbscan']}, Python {m['python']}. Load average "
        f"{m['load_average']} at the start, {m.get('load_average_end')} at the end. Model: "
        f"{r['model_source']}. Wall time {r['wall_s'] / 60:.1f} min.",
        "",
        f"Reference: 3x3 conv 64->64 on 256², best layout, {r['conv_reference_gflops']:.1f} GFLOP/s "
        f"(NCHW {r['conv_reference'][256]['by_layout']['nchw']:.1f}, channels-last "
        f"{r['conv_reference'][256]['by_layout']['channels_last']:.1f}); theoretical FMA peak "
        f"{m['theoretical_peak_gflops']} GFLOP/s.",
        "",
        "| movie frame | model input | ms/frame (channels-last, packed weights) | ms/frame (weights "
        "reordered per call, before) | ms/frame (NCHW) | GFLOP/frame | GFLOP/s | of the conv reference "
        "| of the FMA peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, row in r["model"].items():
        unpacked, nchw = (("" if row.get(k) is None else f"{row[k]:.0f}") for k in ("unpacked", "nchw"))
        out.append(
            f"| {size}² | {row['model_shape'][0]}x{row['model_shape'][1]} ({row['tiles']} tile) | "
            f"{row['ms']:.0f} | {unpacked} | {nchw} | {row['flops'] / 1e9:.2f} | "
            f"{row['gflops_per_s']:.1f} | {row['fraction_of_conv']:.2f} | "
            f"{(row['fraction_of_peak'] or float('nan')):.2f} |")
    if r.get("model_previous"):
        out += ["", "The previously shipped architecture (random weights, full pixels, 32 filters, "
                "5 levels; docs/model.md) in the same run: " + "; ".join(
                    f"{size}² {row['ms']:.0f} ms ({_speedup(r['model'][size]['ms'], row['ms'])}), "
                    f"{row['flops'] / 1e9:.2f} GFLOP, {row['fraction_of_conv']:.2f} of the conv reference"
                    for size, row in r["model_previous"].items()) + "."]
    if r.get("allocator"):
        out += ["", "Freed memory kept for reuse (`keep_freed_memory`) against glibc's defaults, "
                "fresh processes in turns (ms per frame, page faults per frame): " + "; ".join(
                    f"{size}² {row['default']['ms']:.0f} ms ({row['default']['page_faults']:.0f}) -> "
                    f"{row['kept']['ms']:.0f} ms ({row['kept']['page_faults']:.0f}), {row['speedup']:.2f}x"
                    for size, row in r["allocator"].items()) + "."]
    if r.get("conv_shapes"):
        out += ["", "Each convolution shape alone (3x3, channels-last, one image), as a fraction of "
                "the conv reference:", ""] + _shapes_markdown(r["conv_shapes"])
    for size in (256, 512):
        prof = r.get(f"model_profile_{size}")
        if not prof:
            continue
        out += ["", f"Operator self time of one {size}² frame: " + ", ".join(
            f"{k} {prof['fraction'][k]:.0%} ({prof['ms'][k]:.0f} ms)" for k in prof["ms"]) + "."]
        conv = prof.get("conv", {})
        if conv.get("alone_fraction"):
            out[-1] += (f" Its {conv['calls']} convolutions ({conv['flops'] / 1e9:.2f} GFLOP) take "
                        f"{conv['in_model_ms']:.0f} ms in the model ({conv['in_model_fraction']:.2f} of the "
                        f"conv reference) and {conv['alone_ms']:.0f} ms when each is timed alone on the same "
                        f"shapes ({conv['alone_fraction']:.2f}): the ceiling for a frame that did nothing else.")
    t = r["tune"]
    out += [
        "",
        f"Live tuning, {t['source']}: pair {t['pair_shape'][0]}x{t['pair_shape'][1]}, "
        f"{sum(t['foreground_px'])} foreground pixels, {t['grid_points']} grid points (step "
        f"{t['grid_step']}).",
        "",
        "| action | latency | target |",
        "|---|---|---|",
        f"| first clustering of the pair | {t['first_ms']:.0f} ms | |",
        f"| `min_cluster_size` change | {t['min_cluster_size_ms']:.1f} ms | <= 50 ms |",
        f"| `min_samples` (m_pts) change | {t['min_samples_ms']:.0f} ms | <= 1000 ms |",
        f"| HDBSCAN on all {t['every_pixel_points']} foreground pixels, from scratch | "
        f"{t['every_pixel_ms']:.0f} ms | |",
        "",
        f"SEG-like agreement of the fast path with clustering every pixel: "
        f"{t['agreement_with_every_pixel']:.3f}.",
    ]
    p = r["pipeline"]
    out += [
        "",
        f"Whole pipeline, {p['source']} ({p['shape'][0]}x{p['shape'][1]}, {p['frames']} frames):",
        "",
        "| method | s/frame | model | clustering | tracking | other | SEG | DET | TRA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("cosine", "track_movie"),
                        ("cosine_overlap", "track_movie, model overlapped with clustering"),
                        ("cosine_every_pixel", "track_movie, every pixel clustered"),
                        ("reference", "classical reference")):
        e = p.get(name)
        if not e:
            continue
        sp = e.get("split", {})
        sc = e.get("scores") or {}

        def f(x, fmt="{:.2f}"):
            return "" if x is None else fmt.format(x)

        out.append(f"| {label} | {e['s_per_frame']:.2f} | {f(sp.get('model_s_per_frame'))} | "
                   f"{f(sp.get('cluster_s_per_frame'))} | {f(sp.get('track_s_per_frame'))} | "
                   f"{f(sp.get('other_s_per_frame'))} | {f(sc.get('SEG'), '{:.3f}')} | "
                   f"{f(sc.get('DET'), '{:.3f}')} | {f(sc.get('TRA'), '{:.3f}')} |")
    mem = r["memory"]
    out += [
        "",
        f"Memory: peak RSS {mem['long']['peak_rss_mib']:.0f} MiB tracking {mem['long']['frames']} "
        f"frames of {mem['size']}² vs {mem['short']['peak_rss_mib']:.0f} MiB for "
        f"{mem['short']['frames']} frames: ratio **{mem['ratio']:.3f}** (target <= 1.2).",
    ]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small inputs, well under a minute")
    ap.add_argument("--json", metavar="OUT", help="also write the results here")
    ap.add_argument("--model", metavar="DIR", help="model folder (default: the shipped model)")
    ap.add_argument("--data", metavar="DIR", default=str(DEFAULT_DATA), help="shared CTC data folder")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--pipeline-frames", type=int, default=None)
    ap.add_argument("--memory-frames", type=int, nargs=2, metavar=("LONG", "SHORT"), default=None)
    ap.add_argument("--conv-shapes", action="store_true",
                    help="time only the conv reference and each convolution shape alone")
    ap.add_argument("--markdown", metavar="JSON", help="print the results of an earlier --json as Markdown")
    ap.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--widget-memory-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mem-budget", type=int, default=256 * 2**20, help=argparse.SUPPRESS)
    ap.add_argument("--widget-memory", type=int, nargs=3, metavar=("LONG", "SHORT", "SIZE"),
                    help="only the widget's memory: peak memory of LONG and SHORT frames of "
                         "SIZE² through the widget's code path")
    ap.add_argument("--allocator-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--alloc-sizes", type=int, nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--alloc-frames", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mem-frames", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--mem-size", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        return _memory_child(args)
    if args.widget_memory_child:
        return _widget_memory_child(args)
    if args.widget_memory:
        long_n, short_n, size = args.widget_memory
        model_dir = Path(args.model) if args.model else default_model_dir()
        r = {"machine": machine_info(),
             "widget_memory": bench_widget_memory(model_dir, long_n, short_n, size, args.threads)}
        w = r["widget_memory"]
        print(f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores")
        for name in ("short", "long"):
            row = w[name]
            print(f"{name:5s} {row['frames']:5d} frames of {size}²: peak anonymous "
                  f"{row['peak_anon_mib']:.0f} MiB, peak RSS {row['peak_rss_mib']:.0f} MiB "
                  f"(file pages included), on disk: {row['on_disk']}, {row['seconds']:.0f} s")
        print(f"ratio long/short: anonymous {w['ratio']:.2f}, RSS {w['ratio_rss']:.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1))
        return 0
    if args.allocator_child:
        return _allocator_child(args)
    if args.markdown:
        r = json.loads(Path(args.markdown).read_text())
        r["model"] = {int(k): v for k, v in r["model"].items()}
        r["model_previous"] = {int(k): v for k, v in r.get("model_previous", {}).items()}
        r["conv_reference"] = {int(k): v for k, v in r["conv_reference"].items()}
        r["allocator"] = {int(k): v for k, v in r.get("allocator", {}).items()}
        r["conv_shapes"] = {k: {int(s): c for s, c in row.items()}
                            for k, row in r.get("conv_shapes", {}).items()}
        print(markdown(r))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.conv_shapes:
        shapes = conv_shapes(15, (16, 32, 64, 128, 256, 512))
        print(json.dumps(machine_info()))
        print("\n".join(_shapes_markdown(shapes)))
        return 0
    quick = args.quick
    data = Path(args.data)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nct-bench-") as tmp:
        tmp = Path(tmp)
        model_dir, model_source = _model_folder(args.model, tmp)
        r: dict = {"quick": quick, "machine": machine_info(), "model_source": model_source}
        r["section_s"] = sections = {}
        t0 = time.perf_counter()
        repeat = 3 if quick else 15
        conv = conv_reference(repeat)
        r["conv_reference_gflops"] = conv[256]["gflops"]
        r["conv_reference"] = conv
        r["conv_shapes"] = conv_shapes(repeat, (32, 128) if quick else (16, 32, 64, 128, 256, 512))
        sizes = (256, 512) if quick else (256, 512, 1024)
        r["model"] = bench_model(model_dir, sizes, 1 if quick else 3, "cpu",
                                 layouts=("channels_last", "unpacked") + (() if quick else ("nchw",)))
        r["model_previous"] = bench_model(_previous_model_folder(model_dir, tmp), sizes, 1 if quick else 3, "cpu")
        r["model_previous_arch"] = PREVIOUS_ARCH
        peak = r["machine"]["theoretical_peak_gflops"]
        for row in list(r["model"].values()) + list(r["model_previous"].values()):
            row["fraction_of_conv"] = row["gflops_per_s"] / r["conv_reference_gflops"]
            row["fraction_of_peak"] = row["gflops_per_s"] / peak if peak else None
        r["allocator"] = bench_allocator(model_dir, (256,) if quick else (512, 1024), 1 if quick else 4,
                                         1 if quick else 2, args.threads or torch.get_num_threads())
        for size in (256, 512):  # the smallest frame, where the model is furthest from the reference
            r[f"model_profile_{size}"] = profile_model(model_dir, size, r["conv_reference_gflops"], 3 if quick else 7)
        if torch.cuda.is_available():
            r["model_cuda"] = bench_model(model_dir, sizes, 3 if quick else 10, "cuda")
        sections["model"], t0 = time.perf_counter() - t0, time.perf_counter()
        a, b, info = tune_pair(model_dir, data, quick)
        params, _ = default_params(load_model(model_dir)[1])
        r["tune"] = dict(source=info["source"], **bench_tune(a, b, params, info["truth"], quick))
        sections["tune"], t0 = time.perf_counter() - t0, time.perf_counter()
        frames = args.pipeline_frames or (4 if quick else 12)
        r["pipeline"] = bench_pipeline(model_dir, data, quick, tmp, frames)
        sections["pipeline"], t0 = time.perf_counter() - t0, time.perf_counter()
        long_n, short_n = args.memory_frames or ((24, 6) if quick else (500, 50))
        # The two runs share the cores: half the threads each (more threads than cores
        # spin-wait).
        r["memory"] = bench_memory(model_dir, long_n, short_n, 128 if quick else 512,
                                   max(1, (args.threads or torch.get_num_threads()) // 2))
        sections["memory"] = time.perf_counter() - t0
    r["machine"]["load_average_end"] = (
        [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None)
    r["wall_s"] = time.perf_counter() - started
    # Flat keys other tools read.
    r.update(
        model_ms_per_frame_256=r["model"][256]["ms"],
        model_ms_per_frame_512=r["model"][512]["ms"],
        model_ms_per_frame_1024=r["model"].get(1024, {}).get("ms"),
        model_peak_fraction=r["model"][512]["fraction_of_conv"],
        model_theoretical_peak_fraction=r["model"][512]["fraction_of_peak"],
        tune_min_cluster_size_ms=r["tune"]["min_cluster_size_ms"],
        tune_min_samples_ms=r["tune"]["min_samples_ms"],
        hdbscan_from_scratch_ms=r["tune"]["every_pixel_ms"],
        pipeline_s_per_frame=r["pipeline"]["cosine"]["s_per_frame"],
        pipeline_overlap_s_per_frame=(r["pipeline"].get("cosine_overlap") or {}).get("s_per_frame"),
        reference_s_per_frame=r["pipeline"]["reference"]["s_per_frame"],
        memory_ratio=r["memory"]["ratio"],
    )
    print(_table(r))
    text = json.dumps(r, indent=2, default=lambda o: sorted(o) if isinstance(o, set) else float(o))
    print(text)
    if args.json:
        out = Path(args.json)
        tmp_out = out.with_name(out.name + ".tmp")
        tmp_out.write_text(text)
        tmp_out.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
