"""Batch tracking on dask.distributed: a LocalCluster of 2 workers, tiny movies, a tiny model."""

import numpy as np
import pytest
import tifffile

distributed = pytest.importorskip("distributed")

from napari_cosine_tracker.core.batch import is_finished, movie_name, result_dir, track_batch  # noqa: E402
from napari_cosine_tracker.core.cli import main  # noqa: E402
from napari_cosine_tracker.core.io import read_ctc_result  # noqa: E402
from napari_cosine_tracker.core.synthetic import make_synthetic_movie  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model_dir(make_tiny_model):
    return make_tiny_model(filters=4, levels=2)


@pytest.fixture(scope="module")
def movies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("movies")
    paths = []
    for i, n in enumerate((5, 6)):
        m = make_synthetic_movie(n_frames=n, shape=(48, 56), n_cells=3, seed=i)
        path = folder / f"well_{i}.tif"
        tifffile.imwrite(path, m.images, photometric="minisblack")
        paths.append(path)
    bad = folder / "broken.tif"
    bad.write_bytes(b"this is not a TIFF file")
    return paths, bad


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as c:
        yield c


def test_names():
    assert movie_name("/data/pos3.ome.tif") == "pos3"
    assert movie_name("/data/Fluo-N2DH-SIM+/01") == "01"
    assert result_dir("out", "a/b/pos1.TIFF").as_posix() == "out/pos1_RES"


def test_batch_tracks_reports_failure_and_skips_on_rerun(cluster, movies, tiny_model_dir, tmp_path):
    good, bad = movies
    out = tmp_path / "results"
    seen = []
    with distributed.Client(cluster) as client:
        items = track_batch([good[0], bad, good[1]], out, tiny_model_dir, client=client,
                            threads=1, progress=seen.append)
        assert [it.name for it in items] == ["well_0", "broken", "well_1"]
        assert [it.status for it in items] == ["done", "failed", "done"]
        assert sorted(it.name for it in seen) == ["broken", "well_0", "well_1"]
        assert "broken.tif" in items[1].error
        assert not (out / "broken_RES").exists()
        for it, n in zip((items[0], items[2]), (5, 6)):
            assert is_finished(it.output)
            labels, lineage = read_ctc_result(it.output)
            assert labels.shape == (n, 48, 56)
            assert it.frames == n and it.tracks == len(lineage)
            assert set(np.unique(labels[:])) - {0} <= set(lineage[:, 0].tolist())
        # Nothing temporary is left beside the results.
        assert sorted(p.name for p in out.iterdir()) == ["well_0_RES", "well_1_RES"]
        before = (out / "well_0_RES" / "res_track.txt").stat().st_mtime_ns
        again = track_batch([good[0], bad, good[1]], out, tiny_model_dir, client=client, threads=1)
        assert [it.status for it in again] == ["skipped", "failed", "skipped"]
        assert (out / "well_0_RES" / "res_track.txt").stat().st_mtime_ns == before


def test_batch_rejects_clashing_names_and_bad_parameters(movies, tmp_path):
    good, _ = movies
    other = tmp_path / "elsewhere"
    other.mkdir()
    clash = other / good[0].name
    clash.write_bytes(good[0].read_bytes())
    with pytest.raises(ValueError, match="both be written"):
        track_batch([good[0], clash], tmp_path / "out")
    with pytest.raises(ValueError, match="unknown clustering parameter"):
        track_batch([good[0]], tmp_path / "out", cluster_changes={"min_sampels": 3})
    with pytest.raises(ValueError, match="workers"):
        track_batch([good[0]], tmp_path / "out", workers=0)
    with pytest.raises(ValueError, match="scale must be"):
        track_batch([good[0]], tmp_path / "out", scale=-1)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_track_one_resizes_for_cell_size(movies, tiny_model_dir, tmp_path):
    from napari_cosine_tracker.core.batch import track_one
    from napari_cosine_tracker.core.io import read_ctc_result

    good, _ = movies
    summary = track_one(good[0], tmp_path / "res", tiny_model_dir, threads=1, scale=0.5)
    labels, _ = read_ctc_result(tmp_path / "res")
    assert summary["frames"] == 5 and labels.shape == (5, 48, 56) and summary["scale"] == 0.5
    # "auto": measured per movie (the tiny random model's blobs give some factor in range)
    auto = track_one(good[0], tmp_path / "res_auto", tiny_model_dir, threads=1, scale="auto")
    assert 0.1 <= auto["scale"] <= 10
    assert read_ctc_result(tmp_path / "res_auto")[0].shape == (5, 48, 56)


def test_cli_batch_on_a_running_scheduler(cluster, movies, tiny_model_dir, tmp_path, capsys):
    good, bad = movies
    out = tmp_path / "cli"
    args = ["batch", str(good[0]), str(bad), "-o", str(out), "--weights", str(tiny_model_dir),
            "--scheduler", cluster.scheduler_address, "--threads", "1"]
    assert main(args) == 1  # one movie failed
    text = capsys.readouterr()
    assert "1 tracked, 0 already done, 1 failed" in text.out
    assert "broken.tif" in text.err
    assert is_finished(out / "well_0_RES")
    assert main(args[:2] + args[3:]) == 0  # without the broken one: already done
    assert "0 tracked, 1 already done, 0 failed" in capsys.readouterr().out


@pytest.mark.parametrize("kind, directives", [
    ("slurm", ["#SBATCH --cpus-per-task=4", "#SBATCH --mem=", "#SBATCH -t 03:00:00", "#SBATCH -p short"]),
    ("pbs", ["#PBS -l select=1:ncpus=4", "#PBS -l walltime=03:00:00", "#PBS -q short"]),
    ("sge", ["#$ -l h_rt=03:00:00", "#$ -q short"]),
    ("lsf", ["#BSUB -n 4", "#BSUB -q short"]),
])
def test_cluster_dry_run_prints_the_job_script(kind, directives, capsys, tmp_path):
    pytest.importorskip("dask_jobqueue")
    argv = ["batch", "any.tif", "-o", str(tmp_path / "out"), "--cluster", kind, "--cores", "4",
            "--memory", "16GB", "--walltime", "03:00:00", "--queue", "short", "--jobs", "3", "--dry-run"]
    assert main(argv) == 0
    script = capsys.readouterr().out
    for d in directives:
        assert d in script, script
    # one single-core worker per core, each running one movie at a time
    assert "--nthreads 1" in script and "--nworkers 4" in script and "dask_worker" in script
    assert not (tmp_path / "out").exists()  # nothing was submitted or written
    assert main(["batch", "any.tif", "-o", str(tmp_path / "out"), "--dry-run"]) == 2
    assert "give --cluster" in capsys.readouterr().err


def test_cluster_local_runs_the_batch_end_to_end(movies, tiny_model_dir, tmp_path, capsys):
    """The --cluster code path (start workers, track, close them) on this machine; the
    workers' settings (OMP_NUM_THREADS=1, ...) do not stay in the caller's environment."""
    import os

    before = dict(os.environ)
    paths, _ = movies
    out = tmp_path / "out"
    argv = ["batch", *map(str, paths), "-o", str(out), "--weights", str(tiny_model_dir), "--scale", "1",
            "--cluster", "local", "--cores", "1", "--jobs", "2"]
    assert main(argv) == 0
    assert "2 tracked" in capsys.readouterr().out
    for p in paths:
        labels, _ = read_ctc_result(result_dir(out, p))
        assert len(labels) == len(tifffile.imread(p))
    assert dict(os.environ) == before
