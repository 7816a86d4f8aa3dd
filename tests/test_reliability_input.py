"""Bad and unusual input through the command line, the core API and the napari reader.

Every case ends in a correct result or in exit status 2 with one ``error: ...`` line naming
the file and the fix -- never a traceback, never a half-written output. A tiny random model
keeps the runs fast; results are checked for validity and for invariances a correct pipeline
has (pixel type and offset do not change the cells found), not against stored numbers.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import tifffile
import torch

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.model import ModelConfig, RecurrentHourglass, save_model
from napari_cosine_tracker.core.pipeline import track_movie
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.plugin.reader import napari_get_reader

TINY = ModelConfig(filters=8, levels=3, stacks=1, embedding_dim=4)
GRAY = {"photometric": "minisblack"}  # else tifffile stores 3 or 4 planes as RGB


@pytest.fixture(scope="module")
def model_dir(make_tiny_model):
    return make_tiny_model()


@pytest.fixture(scope="module")
def movie():
    return make_synthetic_movie(n_frames=4, shape=(48, 56), n_cells=4, seed=5)


def track(capsys, images, out, model_dir, *extra):
    rc = main(["track", str(images), "-o", str(out), "--weights", str(model_dir),
               "--device", "cpu", "--quiet", *extra])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def expect_error(capsys, argv, *fragments):
    """``main(argv)`` exits 2 with one ``error:`` message holding every fragment."""
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for f in fragments:
        assert f.lower() in err.lower(), err
    return err


def valid_result(out, n_frames, shape):
    labels, lineage = io.read_ctc_result(out)
    assert labels.shape == (n_frames, *shape)
    stack = np.asarray(labels)
    presence = {t: io._labels_in(stack[t]) for t in range(n_frames)}
    assert io.check_lineage(lineage, presence, n_frames=n_frames) == []
    return stack, lineage


# -- movies the tracker refuses, with the reason and the fix ----------------------------------

def _write(path, data, **kw):
    tifffile.imwrite(path, data, **kw)
    return path


BAD_MOVIES = {
    # name: (writer, fragments of the message)
    "rgb": (lambda p: _write(p / "rgb.tif", np.zeros((3, 16, 16, 3), np.uint8),
                             photometric="rgb"), ["rgb.tif", "rgb", "grayscale"]),
    "multichannel": (lambda p: _write(p / "tcyx.tif", np.zeros((3, 2, 16, 16), np.uint16),
                                      metadata={"axes": "TCYX"}, **GRAY),
                     ["tcyx.tif", "multichannel", "--channel"]),
    "volume": (lambda p: _write(p / "tzyx.tif", np.zeros((3, 5, 16, 16), np.uint16),
                                metadata={"axes": "TZYX"}, **GRAY),
               ["tzyx.tif", "3d volumes", "projection"]),
    "single image": (lambda p: _write(p / "one.tif", np.zeros((16, 16), np.uint16)),
                     ["one.tif", "single 2-d image", "movie"]),
    "one frame": (lambda p: _write(p / "t1.tif", np.zeros((1, 16, 16), np.uint16)),
                  ["t1.tif", "single 2-d image", "movie"]),
    "bool": (lambda p: _write(p / "mask.tif", np.zeros((3, 16, 16), bool), **GRAY),
             ["mask.tif", "pixel type bool", "grayscale"]),
    "not a tiff": (lambda p: (p / "movie.avi").write_bytes(b"RIFF....AVI ") and p / "movie.avi",
                   ["movie.avi", "not a tiff", "convert"]),
    "missing": (lambda p: p / "nowhere.tif", ["nowhere.tif", "no such file"]),
}


@pytest.mark.parametrize("case", list(BAD_MOVIES))
def test_cli_refuses_bad_movies_with_the_fix(case, tmp_path, model_dir, capsys):
    make, fragments = BAD_MOVIES[case]
    path = make(tmp_path)
    out = tmp_path / "out_RES"
    expect_error(capsys, ["track", path, "-o", out, "--weights", model_dir, "--quiet"],
                 *fragments)
    assert not out.exists()
    if case == "multichannel":  # napari opens it, one layer per channel to choose from
        assert len(napari_get_reader(str(path))(str(path))) == 2
    else:
        assert napari_get_reader(str(path)) is None  # napari's own readers may take it instead


def _truncated_stack(tmp_path):
    p = _write(tmp_path / "cut.tif", np.arange(4 * 64 * 64, dtype=np.uint16).reshape(4, 64, 64))
    p.write_bytes(p.read_bytes()[:9000])
    return p


def _truncated_frame_in_folder(tmp_path):
    d = tmp_path / "seq"
    d.mkdir()
    for t in range(3):
        _write(d / f"t{t:03d}.tif", np.full((64, 64), t, np.uint16))
    f = d / "t002.tif"
    f.write_bytes(f.read_bytes()[:3000])
    return d


def _frames_of_two_sizes(tmp_path):
    d = tmp_path / "sizes"
    d.mkdir()
    _write(d / "t000.tif", np.zeros((32, 32), np.uint16))
    _write(d / "t001.tif", np.zeros((32, 40), np.uint16))
    return d


@pytest.mark.parametrize("make, fragments", [
    (_truncated_stack, ["cut.tif", "truncated", "again"]),
    (_truncated_frame_in_folder, ["t002.tif", "truncated", "again"]),
    (_frames_of_two_sizes, ["t001.tif", "(32, 40)", "one size"]),
], ids=["truncated stack", "truncated frame", "two sizes"])
def test_cli_refuses_broken_files(make, fragments, tmp_path, model_dir, capsys):
    path = make(tmp_path)
    out = tmp_path / "res"
    expect_error(capsys, ["track", path, "-o", out, "--weights", model_dir, "--quiet"],
                 *fragments)
    assert not out.exists()
    assert napari_get_reader(str(path)) is None


def test_nan_inf_frames_are_named_by_cli_and_reader(tmp_path, model_dir, capsys):
    data = np.random.default_rng(0).random((4, 24, 24)).astype(np.float32)
    data[1, 5, 5] = np.inf
    p = _write(tmp_path / "nan.tif", data, **GRAY)
    out = tmp_path / "res"
    expect_error(capsys, ["track", p, "-o", out, "--weights", model_dir, "--quiet"],
                 "nan.tif", "frame 1", "nan or inf", "nan_to_num")
    assert not out.exists()
    # The reader samples a few frames for the display range (0, the frame napari shows first,
    # (T - 1) // 2, and T - 1): a bad one among them is named when the file is opened ...
    with pytest.raises(io.MovieError, match="frame 1 contains NaN or Inf"):
        napari_get_reader(str(p))(str(p))
    # ... any other is named when it is shown; the others display normally.
    data[1, 5, 5] = 0.5
    data[2, 0, 0] = np.nan
    _write(p, data, **GRAY)
    layer_data, meta, kind = napari_get_reader(str(p))(str(p))[0]
    assert kind == "image" and layer_data.shape == (4, 24, 24)
    assert np.isfinite(layer_data[1]).all()
    with pytest.raises(io.MovieError, match="frame 2 contains NaN or Inf"):
        layer_data[2]


# -- movies the tracker handles: pixel types, sizes, empty frames -----------------------------

def test_pixel_types_and_offsets_give_the_same_cells(tmp_path, model_dir, movie, capsys):
    """uint8, uint16, float32 and signed movies of the same picture: same result."""
    base = np.clip(movie.images.astype(np.float64), 0, None)
    base = np.round(base / base.max() * 200)  # exact in every type below
    results = {}
    for dt, offset in [("uint16", 0), ("uint8", 0), ("float32", 0.25), ("int16", -100)]:
        p = _write(tmp_path / f"{dt}.tif", (base + offset).astype(dt), **GRAY)
        rc, out, err = track(capsys, p, tmp_path / f"{dt}_RES", model_dir)
        assert rc == 0, err
        results[dt] = valid_result(tmp_path / f"{dt}_RES", len(base), base.shape[1:])
    ref_labels, ref_lin = results["uint16"]
    for dt, (labels, lin) in results.items():
        np.testing.assert_array_equal(labels, ref_labels, err_msg=dt)
        np.testing.assert_array_equal(lin, ref_lin, err_msg=dt)


def test_constant_and_all_zero_frames_give_no_cells(tmp_path, model_dir, movie, capsys):
    zeros = _write(tmp_path / "zeros.tif", np.zeros((3, 32, 32), np.uint16), **GRAY)
    rc, out, err = track(capsys, zeros, tmp_path / "z_RES", model_dir)
    assert rc == 0, err
    labels, lineage = valid_result(tmp_path / "z_RES", 3, (32, 32))
    assert not labels.any() and lineage.shape == (0, 4) and "0 tracks" in out
    flat = np.full((3, 32, 32), 1234.5, np.float32)
    res = track_movie(flat, model_dir, device="cpu")
    assert not np.asarray(res.labels).any() and res.lineage.shape == (0, 4)
    # A dark frame in the middle of a movie: that frame is empty, the result stays valid.
    images = movie.images.copy()
    images[2] = 0
    p = _write(tmp_path / "gap.tif", images, **GRAY)
    rc, out, err = track(capsys, p, tmp_path / "gap_RES", model_dir)
    assert rc == 0, err
    labels, _ = valid_result(tmp_path / "gap_RES", len(images), images.shape[1:])
    assert not labels[2].any()


def test_cli_min_daughter_ratio_reaches_the_tracker(tmp_path, model_dir, movie, capsys):
    p = _write(tmp_path / "m.tif", movie.images, **GRAY)
    rc, out, err = track(capsys, p, tmp_path / "r_RES", model_dir, "--min-daughter-ratio", "0")
    assert rc == 0, err
    valid_result(tmp_path / "r_RES", len(movie.images), movie.images.shape[1:])
    expect_error(capsys, ["track", p, "-o", tmp_path / "bad_RES", "--weights", model_dir, "--device", "cpu",
                          "--quiet", "--min-daughter-ratio", "1.5"], "min_daughter_ratio", "[0, 1)")
    assert not (tmp_path / "bad_RES").exists()


def test_tiny_frames(tmp_path, model_dir, capsys):
    rng = np.random.default_rng(1)
    for shape in [(16, 16), (9, 23), (1, 5)]:  # (T, 1, X) is a movie, not a single image
        p = _write(tmp_path / f"tiny{shape[1]}.tif",
                   rng.integers(0, 255, (3, *shape), dtype=np.uint8), **GRAY)
        rc, out, err = track(capsys, p, tmp_path / f"tiny{shape[1]}_RES", model_dir)
        assert rc == 0, err
        valid_result(tmp_path / f"tiny{shape[1]}_RES", 3, shape)


def test_frames_of_differing_sizes_through_the_api(model_dir):
    frames = [np.zeros((16, 16), np.uint8), np.zeros((16, 20), np.uint8)]
    with pytest.raises(io.MovieError, match="one size"):
        track_movie(frames, model_dir, device="cpu")


def test_one_frame_movie_through_the_api(model_dir, movie):
    """The file readers ask for several frames; an in-memory single frame is tracked."""
    res = track_movie(movie.images[:1], model_dir, device="cpu")
    labels = np.asarray(res.labels)
    assert labels.shape == (1, *movie.images.shape[1:])
    assert io.check_lineage(res.lineage, {0: io._labels_in(labels[0])}, n_frames=1) == []
    assert (res.lineage[:, 1:3] == 0).all() and (res.lineage[:, 3] == 0).all()


@pytest.fixture(scope="module")
def background_model(tmp_path_factory):
    """A tiny model that sees background everywhere: the pipeline's cost is the frame size."""
    torch.manual_seed(0)
    model = RecurrentHourglass(TINY)
    with torch.no_grad():
        out = model.stacks[-1].conv_out
        out.weight.zero_()
        out.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
    return save_model(model, tmp_path_factory.mktemp("bg") / "m",
                      {"preprocessing": {"pixel_scale": 0.125}})


def test_large_4096_frames(tmp_path, background_model, capsys):
    rng = np.random.default_rng(2)
    big = rng.integers(0, 4000, (2, 4096, 4096), dtype=np.uint16)
    # Tiled: 512 model pixels in 3 x 3 overlapping tiles of 256, each with its own state.
    stream = EmbeddingStream(background_model, device="cpu", tile_size=256, tile_overlap=64)
    for frame in big:
        emb = stream.push(frame)
    assert emb.shape == (4, 512, 512) and np.isfinite(emb).all()
    assert len(stream._states) == 9 and stream.frames_seen == 2
    np.testing.assert_allclose(np.linalg.norm(emb, axis=0), 1.0, atol=1e-4)
    # End to end through the command line: read, run, label at 4096 x 4096, write.
    p = _write(tmp_path / "big.tif", big, **GRAY)
    del big
    rc, out, err = track(capsys, p, tmp_path / "big_RES", background_model)
    assert rc == 0, err
    labels, lineage = io.read_ctc_result(tmp_path / "big_RES")
    assert labels.shape == (2, 4096, 4096) and not labels[1].any() and len(lineage) == 0


# -- model folders ------------------------------------------------------------------------------

def _model_copy(model_dir, tmp_path, name):
    dst = tmp_path / name
    dst.mkdir()
    for f in model_dir.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _missing_weights(d):
    (d / "weights.safetensors").unlink()
    return ["weights.safetensors", "missing"]


def _truncated_weights(d):
    w = d / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:1000])
    return ["weights.safetensors", "truncated", "re-download or re-train"]


def _mismatched_config(d):
    c = json.loads((d / "config.json").read_text())
    c["architecture"]["embedding_dim"] = 8
    (d / "config.json").write_text(json.dumps(c))
    return ["weights.safetensors", "does not match the architecture"]


def _pickled_weights(d):
    (d / "weights.safetensors").unlink()
    torch.save(RecurrentHourglass(TINY).state_dict(), d / "model.pth")
    return ["pickled weights are never loaded", "model.pth", "safetensors"]


def _broken_config(d):
    (d / "config.json").write_text('{"architecture": ')
    return ["config.json", "not valid json"]


def _missing_config(d):
    (d / "config.json").unlink()
    return ["config.json", "missing"]


@pytest.mark.parametrize("spoil", [_missing_weights, _truncated_weights, _mismatched_config,
                                   _pickled_weights, _broken_config, _missing_config])
def test_cli_bad_model_folders(spoil, tmp_path, model_dir, movie, capsys):
    d = _model_copy(model_dir, tmp_path, "model")
    fragments = spoil(d)
    p = _write(tmp_path / "m.tif", movie.images, **GRAY)
    out = tmp_path / "res"
    expect_error(capsys, ["track", p, "-o", out, "--weights", d, "--quiet"], *fragments)
    assert not out.exists()


def test_cli_missing_model_folder(tmp_path, movie, capsys):
    p = _write(tmp_path / "m.tif", movie.images, **GRAY)
    expect_error(capsys, ["track", p, "-o", tmp_path / "res", "--weights", tmp_path / "nope"],
                 "nope", "does not exist")


# -- output locations -----------------------------------------------------------------------------

def test_output_under_a_file_fails_before_the_run(tmp_path, model_dir, movie, capsys,
                                                  monkeypatch):
    p = _write(tmp_path / "m.tif", movie.images, **GRAY)
    (tmp_path / "notes.txt").write_text("keep")
    # The model must not even be loaded: the error comes before any work.
    import napari_cosine_tracker.core.inference as inference

    def never(*a, **k):
        raise AssertionError("the model ran although the output cannot be written")

    monkeypatch.setattr(inference.EmbeddingStream, "__init__", never)
    expect_error(capsys, ["track", p, "-o", tmp_path / "notes.txt" / "01_RES",
                          "--weights", model_dir], "notes.txt", "choose an output folder")
    expect_error(capsys, ["track", p, "-o", tmp_path / "notes.txt", "--weights", model_dir],
                 "notes.txt", "not a folder")
    foreign = tmp_path / "mydata"
    foreign.mkdir()
    (foreign / "cells.csv").write_text("precious")
    expect_error(capsys, ["track", p, "-o", foreign, "--weights", model_dir],
                 "cells.csv", "new or empty folder")
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert (foreign / "cells.csv").read_text() == "precious"


def _mount(*args) -> bool:
    try:
        return subprocess.run(["mount", *args], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only bind mount (root ignores file modes, so chmod cannot make one)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        os.chmod(ro, 0o555)
        yield ro
        os.chmod(ro, 0o755)
        return
    if not (_mount("--bind", str(src), str(ro)) and _mount("-o", "remount,ro,bind", str(ro))):
        subprocess.run(["umount", str(ro)], capture_output=True)
        pytest.skip("cannot make a read-only bind mount here (needs root with mount rights)")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_read_only_output_location(read_only_dir, tmp_path, model_dir, movie, capsys):
    p = _write(tmp_path / "m.tif", movie.images, **GRAY)
    out = read_only_dir / "01_RES"
    expect_error(capsys, ["track", p, "-o", out, "--weights", model_dir], "01_RES",
                 "choose an output folder you can write to")
    res = io.write_ctc_result(tmp_path / "ok_RES", movie.labels, movie.lineage)
    expect_error(capsys, ["export", res, "--format", "csv", "-o", read_only_dir / "c.csv"],
                 "read-only")
    assert list(read_only_dir.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs: writes beyond that fail with ENOSPC."""
    d = tmp_path / "full"
    d.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", "size=256k", "tmpfs", str(d)):
        pytest.skip("cannot mount a small tmpfs here (needs root with mount rights)")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


def test_full_disk_keeps_the_old_result(full_disk, tmp_path, capsys):
    small = np.zeros((2, 16, 16), np.uint16)
    small[:, 4:8, 4:8] = 1
    out = io.write_ctc_result(full_disk / "01_RES", small)
    before = {f.name: f.read_bytes() for f in out.iterdir()}
    rng = np.random.default_rng(3)
    # ~380 KiB even compressed; each frame has its own labels, so the lineage is simple.
    noise = (rng.integers(1, 3000, (16, 128, 128)) + 3000 * np.arange(16)[:, None, None]
             ).astype(np.uint16)
    with pytest.raises(OSError) as e:
        io.write_ctc_result(out, noise, np.zeros((0, 4)), check=False)
    assert "space" in str(e.value).lower() and "01_RES" in str(e.value)
    assert {f.name: f.read_bytes() for f in out.iterdir()} == before
    assert sorted(f.name for f in full_disk.iterdir()) == ["01_RES"]  # no temporary left
    # Through the command line: the cause, the place and what to do.
    lineage = io.lineage_from_labels(noise)
    big = io.write_ctc_result(tmp_path / "big_RES", noise, lineage)
    expect_error(capsys, ["export", big, "--format", "ctc", "-o", full_disk / "copy_RES"],
                 "no space left", "copy_RES", "free space or choose another output location")
    assert sorted(f.name for f in full_disk.iterdir()) == ["01_RES"]


# -- result folders with a malformed res_track.txt ---------------------------------------------

@pytest.mark.parametrize("text, fragments", [
    ("1 0 2\n", ["line 1", "'1 0 2'", "four integers"]),
    ("1 0 2 0\n2 zero 2 0\n", ["line 2", "zero"]),
    ("1 0 2 0\n1 0 1 0\n", ["[1]", "more than one line"]),
    ("1 2 0 0\n", ["line 1", "ends", "before it begins"]),
    ("1 0 2 -1\n", ["line 1", "negative"]),
    ("\x00\xff\xfe garbage\n", ["line 1", "four integers"]),
], ids=["3 columns", "word", "duplicate", "backwards", "negative", "binary"])
def test_malformed_res_track(text, fragments, tmp_path, movie, capsys):
    res = io.write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    (res / "res_track.txt").write_bytes(text.encode("latin-1"))
    for argv in (["export", res, "--format", "csv", "-o", tmp_path / "c.csv"],
                 ["export", res, "--format", "geff", "-o", tmp_path / "t.geff"]):
        expect_error(capsys, argv, "res_track.txt", *fragments)
    assert not (tmp_path / "c.csv").exists() and not (tmp_path / "t.geff").exists()
    # The reader takes the folder (it has a track file) and says what is wrong with it.
    reader = napari_get_reader(str(res))
    assert reader is not None
    with pytest.raises(io.MovieError) as e:
        reader(str(res))
    for f in ["res_track.txt", *fragments]:
        assert f.lower() in str(e.value).lower()


def test_result_folder_lost_between_renames_points_to_the_old_one(tmp_path, movie):
    res = io.write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    aside = tmp_path / ".01_RES.old-abc123"
    os.replace(res, aside)  # what a kill between _swap_in's two renames leaves
    with pytest.raises(io.MovieError, match=r"\.01_RES\.old-abc123.*rename it to 01_RES"):
        io.read_ctc_result(res)
