"""A killed run resumes from its checkpoint and gives exactly the uninterrupted result."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.io import read_ctc_result
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.resume import CHECKPOINT, partial_dir
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

T = 14

# A child process that tracks the movie with checkpoints every 3 frames and kills itself
# with SIGKILL once frame 8 is done: no clean-up, no flush, as a power cut or the OOM killer.
_CHILD = """
import os, signal, sys
import numpy as np, tifffile
from napari_cosine_tracker.core.pipeline import track_movie
movie = tifffile.imread(sys.argv[1])
def progress(done, n):
    if done == 8:
        os.kill(os.getpid(), signal.SIGKILL)
track_movie(movie, sys.argv[2], device="cpu", checkpoint_dir=sys.argv[3], checkpoint_every=3,
            progress=progress)
print("not killed")
"""


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=T, shape=(96, 96), n_cells=6, seed=8, division_rate=0.2)


def test_sigkill_then_resume_gives_the_uninterrupted_result(movie, make_tiny_model, tmp_path):
    model = make_tiny_model(seed=2, filters=4, levels=2, pixel_scale=None)
    tifffile.imwrite(tmp_path / "movie.tif", movie.images)
    ck = tmp_path / "partial"
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "movie.tif"), str(model), str(ck)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed by SIGKILL, mid-run
    assert "not killed" not in proc.stdout
    assert (ck / CHECKPOINT).exists() and not (ck / (CHECKPOINT + ".tmp")).exists()
    import json

    with np.load(ck / CHECKPOINT, allow_pickle=False) as z:
        assert json.loads(bytes(z["meta"]).decode())["next_frame"] == 6  # the last one before the kill
    import torch

    torch.set_num_threads(1)  # as the child, so the network's arithmetic is the same
    resumed = track_movie(movie.images, model, device="cpu", checkpoint_dir=ck, checkpoint_every=3,
                          resume=True)
    clean = track_movie(movie.images, model, device="cpu")
    np.testing.assert_array_equal(np.asarray(resumed.labels), np.asarray(clean.labels))
    np.testing.assert_array_equal(resumed.lineage, clean.lineage)
    assert len(clean.lineage) > 0


def test_cli_resume_refuses_another_run_and_a_damaged_checkpoint(movie, make_tiny_model, tmp_path,
                                                                  capsys):
    model = make_tiny_model(seed=2, filters=4, levels=2, pixel_scale=None)
    tifffile.imwrite(tmp_path / "movie.tif", movie.images)
    out = tmp_path / "RES"
    args = ["track", str(tmp_path / "movie.tif"), "-o", str(out), "--weights", str(model),
            "--scale", "1", "--device", "cpu", "--quiet", "--checkpoint-every", "4"]
    # A checkpoint left by a run with other settings: --resume refuses it, nothing is written.
    track_movie(movie.images[:T], model, device="cpu", checkpoint_dir=partial_dir(out),
                checkpoint_every=4, warmup=0)  # a complete run keeps its last checkpoint here
    assert (partial_dir(out) / CHECKPOINT).exists()
    assert main(args + ["--resume"]) == 2
    assert "other settings" in capsys.readouterr().err and not out.exists()
    # A damaged checkpoint: a clear error naming the fix.
    (partial_dir(out) / CHECKPOINT).write_bytes(b"not a checkpoint")
    assert main(args + ["--resume"]) == 2
    assert "damaged" in capsys.readouterr().err and not out.exists()
    # Without --resume the run starts over, and its checkpoint goes once the result is written.
    assert main(args) == 0
    assert "starting over" in capsys.readouterr().out
    labels, lineage = read_ctc_result(out)
    assert len(labels) == T and not partial_dir(out).exists()
