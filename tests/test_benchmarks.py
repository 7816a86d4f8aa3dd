"""The benchmark entry point runs end to end (``--quick``, tiny model), so its code cannot rot;
and the thread fix it measures stays in place."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]

KEYS = ["model_ms_per_frame_512", "model_peak_fraction", "tune_min_cluster_size_ms",
        "tune_min_samples_ms", "hdbscan_from_scratch_ms", "pipeline_s_per_frame",
        "reference_s_per_frame", "memory_ratio"]


@pytest.fixture(scope="module")
def tiny_model_dir(make_tiny_model):
    return make_tiny_model(filters=4)


def _env():
    # One torch thread: the suite may run beside other work on two cores.
    return dict(os.environ, OMP_NUM_THREADS="1")


def test_quick_benchmark_runs_and_writes_every_key(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--quick", "--model", str(tiny_model_dir),
         "--json", str(out), "--memory-frames", "8", "3"],
        capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    for key in KEYS:
        assert isinstance(r[key], float) and r[key] > 0, key
    m = r["machine"]
    assert m["cores"] >= 1 and m["versions"]["torch"] and m["cpu"]
    # FLOPs are counted, and grow with the pixels (4x from 256² to 512² movie frames).
    assert r["model"]["512"]["flops"] == pytest.approx(4 * r["model"]["256"]["flops"], rel=0.01)
    assert 0 < r["model_peak_fraction"] < 5
    # the profiled convolutions of a frame are exactly the FLOPs torch's counter finds
    for size in ("256", "512"):
        conv = r[f"model_profile_{size}"]["conv"]
        assert conv["flops"] == r["model"][size]["flops"] and conv["alone_ms"] > 0
    # the path before weight packing is timed beside the default
    assert all(row["unpacked"] > 0 for row in r["model"].values())
    # each convolution shape is timed alone at each map size, against the same reference
    shapes = r["conv_shapes"]
    assert set(shapes) == {"32->32", "64->32", "64->64", "128->128"}
    assert all(c["fraction_of_conv"] > 0 for row in shapes.values() for c in row.values())
    # the previously shipped architecture is timed beside it (26.2 GFLOP per 512² frame)
    previous = r["model_previous"]
    assert previous["512"]["ms"] > 0 and previous["512"]["flops"] == pytest.approx(26.18e9, rel=0.02)
    assert r["tune"]["every_pixel_points"] > r["tune"]["grid_points"]
    assert 0 <= r["tune"]["agreement_with_every_pixel"] <= 1
    assert r["memory"]["long"]["frames"] == 8 and r["memory"]["short"]["frames"] == 3
    assert "model_ms_per_frame_512" in proc.stdout and "live tuning" in proc.stdout


def test_architecture_sweep_times_every_candidate_against_the_reference(tmp_path):
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "arch_sweep.py"), "--sizes", "32", "--rounds", "1",
         "--frames", "1", "--json", str(out)],
        capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    size = json.loads(out.read_text())["sizes"]["32"]
    # the candidates are FLOP-matched pairs: blocks trade width for channels, not arithmetic
    assert size["gflop"]["4x4 blocks, 128 filters, 3 levels (shipped)"] == pytest.approx(
        size["gflop"]["previous shipped (32 filters, 5 levels)"], rel=0.1)
    (round_,) = size["rounds"]
    assert round_["reference_gflops"] > 0
    assert set(round_["fraction"]) == set(size["gflop"]) and all(f > 0 for f in round_["fraction"].values())
    assert "| 4x4 blocks, 128 filters, 3 levels (shipped) |" in proc.stdout


def test_synthetic_accuracy_scores_each_model_on_unseen_movies(tmp_path):
    out = tmp_path / "synth.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "synthetic_accuracy.py"), "--seeds", "0", "--frames", "6",
         "--size", "128", "--json", str(out)],
        capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = json.loads(out.read_text())["models"]["shipped"]
    assert shipped["mean"]["DET"] > 0.8 and shipped["mean"]["TRA"] > 0.8, shipped
    assert shipped["mean"] == shipped["0"]  # one seed: the mean is that seed's scores


def test_gpu_check_agreement_and_no_gpu_message(tiny_model_dir):
    """The GPU check's agreement measure (here CPU against CPU: identical) and its answer on a
    machine without CUDA; the timing part shares bench_model with run.py, tested above."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    from napari_cosine_tracker.core.synthetic import make_synthetic_movie

    frames = list(make_synthetic_movie(n_frames=3, shape=(64, 64), n_cells=3, seed=1).images)
    a = gpu_check.agreement(tiny_model_dir, frames, False, 0.5, device="cpu")
    assert a["frames"] == 3 and a["max_cosine_distance"] < 1e-5 and a["foreground_flip_fraction"] == 0
    ms = gpu_check.network_ms(tiny_model_dir, [64, 96], repeat=2, device="cpu")
    assert sorted(ms) == [64, 96] and all(0 < v < 10_000 for v in ms.values())
    import torch

    if not torch.cuda.is_available():
        proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
                              capture_output=True, text=True, env=_env(), timeout=120)
        assert proc.returncode == 2 and "no CUDA GPU" in proc.stderr


def test_clustering_leaves_torch_thread_count_alone(tiny_model_dir):
    # numba's thread pool, launched by the clustering, used to reset torch's OpenMP threads to
    # all cores; the stream launches it early and restores the count. Fresh process: the pool
    # starts once per process.
    code = textwrap.dedent(f"""
        import numpy as np, torch
        torch.set_num_threads(1)
        from napari_cosine_tracker.core.inference import EmbeddingStream
        from napari_cosine_tracker.core.cluster import PairClustering, synthetic_embeddings
        from napari_cosine_tracker.core.synthetic import make_synthetic_movie
        stream = EmbeddingStream({str(tiny_model_dir)!r}, device="cpu")
        m = make_synthetic_movie(n_frames=2, shape=(64, 64), n_cells=3, seed=0)
        e = synthetic_embeddings(m.labels, 4, seed=0)
        PairClustering(e[0], e[1]).run()
        stream.push(m.images[0])
        print(torch.get_num_threads())
    """)
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "1"


def test_loss_plot_draws_the_curve_and_marks_training_stages(tmp_path):
    """The shipped loss.csv (pretraining, then a fine-tune) plots as valid SVG with one stage mark."""
    import xml.etree.ElementTree as ET

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import plot_loss
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    csv_path = tmp_path / "loss.csv"
    rows = ["step,loss,elapsed_s,stage"] + [f"{i},{1 / i:.4f},{i * 0.1:.1f},{'pre' if i <= 30 else 'fine-tune'}"
                                             for i in range(1, 61)]
    csv_path.write_text("\n".join(rows) + "\n")
    svg = ET.parse(plot_loss.plot(csv_path, tmp_path / "loss.svg")).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert len(svg.findall(f"{ns}path")) == 2  # every step, and the running mean
    marks = [t.text for t in svg.findall(f"{ns}text") if t.get("fill") == "#e6550d"]
    assert marks == ["fine-tune"]


def test_memory_children_report_their_own_peak_not_the_parent_s():
    # Linux carries a parent's peak RSS over fork and exec into ru_maxrss of the child.
    import numpy as np

    ballast = np.ones(512 * 2**20 // 8)  # 512 MiB resident in this process
    code = f"import sys; sys.path.insert(0, {str(REPO / 'benchmarks')!r}); import run; print(run._peak_rss_mib())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    child = float(proc.stdout.strip().splitlines()[-1])
    assert 10 < child < ballast.nbytes / 2**20, child


def test_gui_latency_times_the_event_loop_during_a_real_widget_run(tmp_path):
    """A real napari window (in a child process, on the suite's display) runs the widget on
    a short synthetic movie; the benchmark reports the event loop's turns and freezes and the
    output layers the run made."""
    out = tmp_path / "latency.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gui_latency.py"),
                           "--frames", "4", "8", "--size", "64", "--tiny", "--json", str(out)],
                          capture_output=True, text=True, env=_env(), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(out.read_text())
    assert [run["frames"] for run in r["runs"]] == [4, 8] and r["ratio_max_freeze"] > 0
    for run in r["runs"]:
        assert run["gui_calls"] > 0 and 0 < run["p99_ms"] <= run["max_freeze_ms"]
        assert run["tiny_model"] and 0 < run["peak_anon_mib"] <= run["peak_rss_mib"]
        assert any(name.startswith("blobs") for name in run["layers"])
        assert len(run["layers"]) >= 2  # the movie and the cells the run found
    assert "longest freeze" in proc.stdout and "machine:" in proc.stdout


def test_lodo_tune_chooses_clustering_on_a_dataset_the_model_never_saw(tiny_model_dir, tmp_path):
    """benchmarks/lodo_tune.py scores candidates on a model's left-out dataset, writes its
    choice, and refuses a model on a dataset its training saw."""
    import tifffile

    from napari_cosine_tracker.core.io import write_ctc_gt
    from napari_cosine_tracker.core.synthetic import make_synthetic_movie

    m = make_synthetic_movie(n_frames=4, shape=(96, 96), n_cells=4, seed=3)
    seq = tmp_path / "Synth-Nuclei" / "01"
    seq.mkdir(parents=True)
    for t, frame in enumerate(m.images):
        tifffile.imwrite(seq / f"t{t:03d}.tif", frame)
    write_ctc_gt(seq.with_name("01_GT"), m.labels, m.lineage)
    out = tmp_path / "tune.json"
    script = str(REPO / "benchmarks" / "lodo_tune.py")
    case = f"{tiny_model_dir}:{seq}:1"
    proc = subprocess.run([sys.executable, script, "--case", case, "--check", case, "--frames", "4",
                           "--json", str(out)], capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    assert len(got["history"]) >= 20 and got["score"] >= got["history"][0]["score"]
    assert got["checks"][case]["chosen"]["params"] == got["chosen"]
    config = json.loads((tiny_model_dir / "config.json").read_text())
    seen = tmp_path / "seen"
    seen.mkdir()
    for f in tiny_model_dir.iterdir():
        (seen / f.name).write_bytes(f.read_bytes())
    config["training"] = {"data": [{"name": "Synth-Nuclei/01"}]}
    (seen / "config.json").write_text(json.dumps(config))
    proc = subprocess.run([sys.executable, script, "--case", f"{seen}:{seq}:1", "--frames", "4"],
                          capture_output=True, text=True, env=_env(), timeout=240)
    assert proc.returncode != 0 and "trained on Synth-Nuclei" in proc.stderr
