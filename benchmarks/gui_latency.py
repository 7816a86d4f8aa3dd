"""Does the viewer stay responsive while the widget tracks a long movie?

Opens a real napari window, adds a synthetic movie (``BlobMovie`` of benchmarks/run.py:
nuclei on closed orbits, rendered on demand), docks *Segment and track cells* and runs it
with the shipped fluorescence model at a fixed resize factor, as a user clicking *Run*. The
script stands in for Qt's event loop: it calls ``processEvents`` every 5 ms and times each
call. A call takes as long as the GUI thread was busy with what had queued up (progress,
layer updates, the result being shown), so its longest call is the longest the window froze.
Each movie length runs in its own process; the ratio of the worst freezes says whether
anything on the GUI thread grows with the movie. The process's peak anonymous memory (what
it holds itself) and peak RSS (also the file pages of memory-mapped label stacks, which the
OS can drop) are sampled throughout.

``--tiny``: a random network with the shipped model's pixel scale and embedding size, so its
per-frame buffers are as large as the shipped model's but a 1,000-frame 1024² movie takes
minutes rather than hours; its segmentation is meaningless.

    xvfb-run -a python benchmarks/gui_latency.py [--frames 100 1000] [--size 256] [--tiny]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def private_qsettings(folder: Path) -> None:
    """Keep the widget's remembered settings (QSettings) of a benchmark run in ``folder``,
    out of the user's own: a run must neither read nor leave a remembered model or factor."""
    from qtpy.QtCore import QSettings

    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(folder))


def _tiny_model(folder: Path) -> Path:
    """Random weights, shipped pixel scale (0.5) and embedding size (8), few filters."""
    import torch

    from napari_cosine_tracker.core.model import ModelConfig, RecurrentHourglass, save_model

    torch.manual_seed(0)
    arch = ModelConfig(filters=8, levels=3, stacks=1, embedding_dim=8, space_to_depth=1)
    save_model(RecurrentHourglass(arch), folder, {"preprocessing": {"pixel_scale": 0.5}})
    return folder


def _child(n_frames: int, size: int, threads: int, tiny: bool) -> dict:
    import tempfile

    import napari
    import torch

    from napari_cosine_tracker.plugin.tracker.common import MODEL_FOLDER, MODEL_SHIPPED
    from run import AnonPeak, BlobMovie, _peak_rss_mib  # noqa: E402  (benchmarks/run.py)

    torch.set_num_threads(threads)
    peak = AnonPeak()
    movie = BlobMovie(n_frames, size)
    tmp = tempfile.TemporaryDirectory(prefix="nct-latency-")
    private_qsettings(Path(tmp.name) / "settings")
    # napari takes the lazy movie as it is: frames are rendered when shown or tracked
    viewer = napari.Viewer(show=True)
    viewer.add_image(movie, name=f"blobs {n_frames}x{size}²", contrast_limits=(0, 1200))
    _, w = viewer.window.add_plugin_dock_widget("napari-cosine-tracker", "Segment and track cells")
    app = napari.qt.get_qapp()
    w.device.value = "CPU"
    if tiny:
        w.model_source.value = MODEL_FOLDER
        w.model_folder.value = str(_tiny_model(Path(tmp.name) / "tiny"))
    else:
        w.model_source.value = MODEL_SHIPPED
    w.reset_params()
    w.auto_scale.value = False  # the measure is the run, not the size estimate
    w.scale.value = 1.0
    w.show_pca.value = False
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)
    calls, starts = [], []
    t0 = time.perf_counter()
    w.run()
    while True:
        c0 = time.perf_counter()
        app.processEvents()
        calls.append(time.perf_counter() - c0)
        starts.append(c0 - t0)
        if not w.is_busy():
            break
        time.sleep(0.005)
    run_s = time.perf_counter() - t0
    shown = []  # the result being put into layers after the job has ended
    for _ in range(100):
        c0 = time.perf_counter()
        app.processEvents()
        shown.append(time.perf_counter() - c0)
        time.sleep(0.005)
    peak_anon = peak.stop()
    calls = np.array(calls)
    layers = [layer.name for layer in viewer.layers]
    out = {"frames": n_frames, "size": size, "threads": threads, "tiny_model": tiny,
           "run_s": run_s, "peak_anon_mib": peak_anon,
           "peak_rss_mib": _peak_rss_mib(),
           "gui_calls": int(calls.size), "max_freeze_ms": 1e3 * float(calls.max()),
           "max_freeze_at_s": float(starts[int(np.argmax(calls))]),
           "p99_ms": 1e3 * float(np.quantile(calls, 0.99)),
           "freezes_over_100ms": int(np.sum(calls > 0.1)),
           "max_after_run_ms": 1e3 * float(max(shown)), "layers": layers}
    viewer.close()
    tmp.cleanup()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="a random network (see the notes)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        print(json.dumps(_child(args.child, args.size, args.threads, args.tiny)))
        return 0
    from run import machine_info  # noqa: E402

    out = {"machine": machine_info(), "runs": []}
    for n in args.frames:
        cmd = [sys.executable, __file__, "--child", str(n), "--size", str(args.size),
               "--threads", str(args.threads)] + (["--tiny"] if args.tiny else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out["runs"].append(r)
        print(f"{n} frames of {args.size}²: run {r['run_s']:.0f} s, {r['gui_calls']} GUI turns, "
              f"longest freeze {r['max_freeze_ms']:.0f} ms at {r['max_freeze_at_s']:.1f} s "
              f"(99th percentile {r['p99_ms']:.0f} ms, {r['freezes_over_100ms']} over 100 ms), "
              f"after the run {r['max_after_run_ms']:.0f} ms; peak memory "
              f"{r['peak_anon_mib']:.0f} MiB anonymous, {r['peak_rss_mib']:.0f} MiB RSS", flush=True)
    if len(out["runs"]) >= 2:
        a, b = out["runs"][0], out["runs"][-1]
        out["ratio_max_freeze"] = b["max_freeze_ms"] / a["max_freeze_ms"]
        print(f"longest freeze, {b['frames']} against {a['frames']} frames: "
              f"{out['ratio_max_freeze']:.2f}x")
    m = out["machine"]
    print(f"machine: {m.get('cpu')}, {m.get('cores')} cores, torch threads {args.threads}, "
          f"model: {'tiny random network' if args.tiny else 'shipped fluorescence'}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
