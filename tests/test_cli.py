"""Command line: evaluate/validate through main() and once through the installed script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.synthetic import make_synthetic_movie


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    m = make_synthetic_movie(n_frames=6, shape=(96, 96), n_cells=5, seed=1)
    gt = io.write_ctc_gt(root / "01_GT", m.labels, m.lineage)
    res = io.write_ctc_result(root / "01_RES", m.labels, m.lineage)
    return res, gt


def test_evaluate_table(folders, capsys):
    res, gt = folders
    assert main(["evaluate", str(res), str(gt)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SEG", "1.0000"]
    assert any(line.split() == ["TRA", "1.0000"] for line in out)


def test_evaluate_json(folders, capsys):
    res, gt = folders
    assert main(["evaluate", str(res), str(gt), "--json", "--metrics", "SEG", "DET", "TRA"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["SEG"] == scores["DET"] == scores["TRA"] == 1.0
    assert "HOTA" not in scores
    # the measures before the folders: the folders are not taken for measure names
    for argv in (["--metrics", "DET", "TRA", str(res), str(gt)],
                 [str(res), "--metrics", "DET", "TRA", str(gt)]):
        assert main(["evaluate", "--json", *argv]) == 0
        scores = json.loads(capsys.readouterr().out)
        assert scores["DET"] == scores["TRA"] == 1.0 and "SEG" not in scores
    assert main(["evaluate", "--metrics", "DET", str(res)]) == 2
    assert "needs a result folder and a ground-truth folder" in capsys.readouterr().err


def test_validate(folders, capsys, tmp_path):
    res, _ = folders
    assert main(["validate", str(res)]) == 0
    bad = shutil.copytree(res, tmp_path / "bad")
    with open(bad / "res_track.txt", "a") as f:
        f.write("999 0 2 0\n")
    assert main(["validate", str(bad)]) == 1
    assert "999" in capsys.readouterr().out


def test_bad_input_is_one_line_error(folders, capsys, tmp_path):
    _, gt = folders
    assert main(["evaluate", str(tmp_path / "nope"), str(gt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope" in err and "Traceback" not in err


def test_no_command_and_help(capsys):
    assert main([]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "evaluate" in capsys.readouterr().out


def test_console_script(folders, tmp_path):
    res, gt = folders
    exe = Path(sys.executable).with_name("napari-cosine-tracker")
    assert exe.exists(), "console script not installed: pip install -e ."
    ok = subprocess.run([str(exe), "evaluate", str(res), str(gt), "--json", "--metrics", "TRA"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["TRA"] == 1.0
    bad = subprocess.run([str(exe), "evaluate", str(tmp_path / "x"), str(gt)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ")
    assert "Traceback" not in bad.stderr


def test_track_that_finds_no_cells_says_so_and_what_to_try(tmp_path, capsys, make_tiny_model):
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "dark.tif", np.zeros((5, 48, 48), np.uint16))
    assert main(["track", str(tmp_path / "dark.tif"), "-o", str(tmp_path / "RES"), "--weights",
                 str(make_tiny_model()), "--scale", "1", "--device", "cpu", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "no cells were found" in err and "--scale" in err and "--fg-threshold" in err
