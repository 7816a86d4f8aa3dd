"""Faults: processes killed mid-write, runs interrupted mid-frame.

A child process is killed with SIGKILL (no cleanup handlers run) while it writes a CTC
result, a CSV or an editor project; what is on disk afterwards must be the complete old
output or the complete new one, and the next write must work. An interrupted tracking run
followed by a second run must give what a clean run gives.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.edit import TrackEditor
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

# Labels for the "new" output: shared by the child (exec'd) and the parent (to compare).
MAKE_LABELS = textwrap.dedent("""
    import numpy as np
    def make_labels(n, size, seed):
        rng = np.random.default_rng(seed)
        labels = np.zeros((n, size, size), np.uint16)
        yy, xx = np.mgrid[:size, :size]
        for i in range(1, 9):
            cy, cx = rng.integers(20, size - 20, 2)
            for t in range(n):
                m = (yy - cy - t % 5) ** 2 + (xx - cx) ** 2 < 100
                labels[t][m & (labels[t] == 0)] = i
        return labels
""")
_ns: dict = {}
exec(MAKE_LABELS, _ns)
make_labels = _ns["make_labels"]


def _child(code: str, *args) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", MAKE_LABELS + textwrap.dedent(code),
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


def _wait_for(cond, proc, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("timed out waiting for the child process")


def _kill(proc) -> str:
    """SIGKILL (no clean-up runs); returns what the child printed and was not read yet."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    rest = proc.stdout.read() if proc.stdout else ""
    for f in (proc.stdout, proc.stderr):
        if f:
            f.close()
    return rest or ""


def _result_state(out: Path):
    labels, lineage = io.read_ctc_result(out)
    return np.asarray(labels), lineage


# -- export killed mid-write ----------------------------------------------------------------

WRITE_CTC = """
    import sys
    from napari_cosine_tracker.core import io
    out, n = sys.argv[1], int(sys.argv[2])
    labels = make_labels(n, 256, 7)
    print("start", flush=True)
    io.write_ctc_result(out, labels, io.lineage_from_labels(labels))
    print("done", flush=True)
"""


@pytest.mark.parametrize("kill_after", [1, 20, "last", "random"])
def test_kill_during_ctc_export_leaves_old_or_new(tmp_path, kill_after):
    n = 40
    old_labels = make_labels(6, 64, 1)
    out = io.write_ctc_result(tmp_path / "01_RES", old_labels, io.lineage_from_labels(old_labels))
    new_labels = make_labels(n, 256, 7)
    new_lineage = io.lineage_from_labels(new_labels)

    def masks_in_tmp():
        tmps = list(tmp_path.glob(".01_RES.tmp-*"))
        return max((len(list(t.glob("mask*.tif"))) for t in tmps), default=0)

    proc = _child(WRITE_CTC, out, n)
    try:
        if kill_after == "random":
            assert proc.stdout.readline().strip() == "start"
            time.sleep(np.random.default_rng().uniform(0, 0.5))
        else:
            k = n if kill_after == "last" else kill_after
            _wait_for(lambda: masks_in_tmp() >= k, proc)
    finally:
        _kill(proc)
    labels, lineage = _result_state(out)
    if labels.shape[0] == len(old_labels):
        np.testing.assert_array_equal(labels, old_labels)
        np.testing.assert_array_equal(lineage, io.lineage_from_labels(old_labels))
    else:
        np.testing.assert_array_equal(labels, new_labels)
        np.testing.assert_array_equal(lineage, new_lineage)
    # What the kill left aside is hidden and does not block the next export.
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["01_RES"]
    io.write_ctc_result(out, new_labels[:3], io.lineage_from_labels(new_labels[:3]))
    assert _result_state(out)[0].shape[0] == 3


def test_leftovers_of_killed_writers_are_cleaned_once_stale(tmp_path):
    """A killed export leaves hidden temporary siblings; the next write of the same target
    removes those untouched for STALE_TMP_S, never a fresh one (a writer may be running)."""
    labels = make_labels(6, 64, 1)
    out = io.write_ctc_result(tmp_path / "01_RES", labels, io.lineage_from_labels(labels))
    stale = [tmp_path / ".01_RES.tmp-abc", tmp_path / ".01_RES.old-def"]
    for d in stale:
        d.mkdir()
        (d / "mask000.tif").write_bytes(b"x")
    stale_file = tmp_path / ".res_track.txt.123.tmp"
    stale_file.write_text("1 0 0 0")
    fresh = tmp_path / ".01_RES.tmp-fresh"
    fresh.mkdir()
    old = time.time() - io.STALE_TMP_S - 5
    for p in stale + [stale_file]:
        os.utime(p, (old, old))
    io.write_ctc_result(out, labels, io.lineage_from_labels(labels))
    io.write_lineage(tmp_path / "res_track.txt", io.lineage_from_labels(labels))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [".01_RES.tmp-fresh", "01_RES", "res_track.txt"], left


WRITE_CSV = """
    import sys
    import numpy as np
    from napari_cosine_tracker.core.cli import main
    print("start", flush=True)
    sys.exit(main(["export", sys.argv[1], "--format", "csv", "-o", sys.argv[2], "--overwrite"]))
"""


def test_kill_during_csv_export_leaves_old_or_new(tmp_path):
    labels = make_labels(40, 256, 7)
    res = io.write_ctc_result(tmp_path / "01_RES", labels, io.lineage_from_labels(labels))
    csv = tmp_path / "cells.csv"
    csv.write_text("old,file\n")
    assert main(["export", str(res), "--format", "csv", "-o", str(tmp_path / "ref.csv")]) == 0
    new = (tmp_path / "ref.csv").read_text()
    for delay in (0.0, 0.3, 0.8, 1.5):
        proc = _child(WRITE_CSV, res, csv)
        try:
            assert proc.stdout.readline().strip() == "start"
            time.sleep(delay)
        finally:
            _kill(proc)
        assert csv.read_text() in ("old,file\n", new)
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["01_RES", "cells.csv", "ref.csv"]


# -- editor autosave killed mid-write ---------------------------------------------------------

AUTOSAVE = """
    import hashlib, sys
    from pathlib import Path
    from napari_cosine_tracker.core import io
    from napari_cosine_tracker.core.edit import TrackEditor
    folder = Path(sys.argv[1])
    if (folder / "state.npz").exists():
        ed = TrackEditor.open(folder)
    else:
        labels = make_labels(30, 256, 3)
        ed = TrackEditor(labels, io.lineage_from_labels(labels))
    def digest(ed):
        return f"{len(ed.history)}:{hashlib.md5(ed.lineage.tobytes()).hexdigest()}"
    print("ready", flush=True)
    for k in range(300):
        t = k % 30
        ids = ed.ids_in_frame(t)
        if ids and k % 7:
            ed.delete_cell(t, ids[0])
        elif ed.can_undo:
            ed.undo()
        print("saving", digest(ed), flush=True)
        ed.save(folder)
        print("saved", digest(ed), flush=True)
"""


def _digest(ed) -> str:
    import hashlib

    return f"{len(ed.history)}:{hashlib.md5(ed.lineage.tobytes()).hexdigest()}"


def test_kill_during_autosave_leaves_a_loadable_project(tmp_path):
    folder = tmp_path / "movie.tracks"
    rng = np.random.default_rng()
    opened = 0
    for round_ in range(4):
        proc = _child(AUTOSAVE, folder)
        lines = []
        try:
            first = proc.stdout.readline().split()
            assert first == ["ready"], proc.stderr.read()
            # Round 0 is killed during the very first save (the base), the others later.
            if round_:
                while sum(ln[0] == "saved" for ln in lines) < rng.integers(1, 6):
                    lines.append(proc.stdout.readline().split())
                time.sleep(rng.uniform(0, 0.05))
        finally:
            lines += [ln.split() for ln in _kill(proc).splitlines()]
        if not (folder / "state.npz").exists():
            assert round_ == 0  # killed before the first save finished: nothing to lose
            continue
        ed = TrackEditor.open(folder)
        assert ed.check() == []
        # What is on disk is the last save that finished or the one the kill interrupted.
        done = [d for kind, d in lines if kind == "saved"]
        started = [d for kind, d in lines if kind == "saving"]
        allowed = set(done[-1:] + started[-1:])
        if allowed:
            assert _digest(ed) in allowed, (_digest(ed), lines[-4:])
        opened += 1
        names = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".tmp"))
        assert names[-1] == "state.npz" and all(x.startswith("base-") for x in names[:-1])
    assert opened, "no save finished in any round"
    # The next autosave tidies what the kills left behind.
    ed = TrackEditor.open(folder)
    ed.save()
    assert not list(folder.glob(".*.tmp")) and len(list(folder.glob("base-*.npz"))) == 1


# -- runs interrupted, then run again ----------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(make_tiny_model):
    return make_tiny_model()


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=10, shape=(64, 72), n_cells=5, seed=11)


def test_stream_interrupted_between_tiles_resumes_exactly(model_dir, movie):
    """A cancel or error between two tiles of a frame must not advance half the state."""
    clean = EmbeddingStream(model_dir, device="cpu", tile_size=16, tile_overlap=4)
    want = [clean.push(f) for f in movie.images]
    stream = EmbeddingStream(model_dir, device="cpu", tile_size=16, tile_overlap=4)
    for f in movie.images[:2]:
        stream.push(f)
    real = stream.model.forward
    calls = []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. the GUI's cancel, or an out-of-memory error
        return real(*a, **k)

    stream.model.forward = flaky
    with pytest.raises(KeyboardInterrupt):
        stream.push(movie.images[2])
    assert stream.frames_seen == 2
    stream.model.forward = real
    got = [stream.push(f) for f in movie.images[2:]]
    for a, b in zip(got, want[2:]):
        np.testing.assert_array_equal(a, b)


def test_track_movie_after_an_interrupted_run_equals_a_clean_run(model_dir, movie):
    clean = track_movie(movie.images, model_dir, device="cpu")
    stream = EmbeddingStream(model_dir, device="cpu")

    def stop_at_3(i, n):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        track_movie(movie.images, stream=stream, progress=stop_at_3)
    again = track_movie(movie.images, stream=stream)
    np.testing.assert_array_equal(np.asarray(again.labels), np.asarray(clean.labels))
    np.testing.assert_array_equal(again.lineage, clean.lineage)


TRACK = """
    import sys
    from napari_cosine_tracker.core.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def test_cli_track_killed_then_run_again_equals_a_clean_run(tmp_path, model_dir, movie, capsys):
    images = tmp_path / "movie.tif"
    tifffile.imwrite(images, movie.images, photometric="minisblack")
    out = tmp_path / "01_RES"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = ["track", images, "-o", out, "--weights", model_dir, "--device", "cpu", "--quiet"]
    env = dict(os.environ, TMPDIR=str(scratch), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(TRACK), *map(str, argv)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # Killed once tracked frames are being stored, before the result is written.
        stored = _wait_for(lambda: len(list(tmp_path.glob(".01_RES.partial/frames/*.npy"))) >= 2,
                           proc, timeout=300)
    finally:
        err = proc.stderr.read() if proc.poll() is not None else ""
        _kill(proc)
    if not stored:
        pytest.fail(f"the child finished before it could be killed: {proc.returncode} "
                    f"{err}")
    assert not out.exists()
    assert main([str(a) for a in argv]) == 0
    assert main([str(a) for a in argv[:3]] + [str(tmp_path / "clean_RES")]
                + [str(a) for a in argv[4:]]) == 0
    capsys.readouterr()
    a, b = _result_state(out), _result_state(tmp_path / "clean_RES")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
