"""Security: loading never unpickles, and no file's content can make us write outside the
folder the user chose (path components from files, or links planted in an output folder).

The payloads below would create a marker file if they were ever unpickled; each test checks
that the load is refused with a clear message *and* that the marker never appeared.
"""

from __future__ import annotations

import io as _bytes_io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.edit import TrackEditor
from napari_cosine_tracker.core.inference import EmbeddingStream
from napari_cosine_tracker.core.model import ModelConfig, ModelError, RecurrentHourglass, load_model, save_model

TINY = ModelConfig(filters=8, levels=3, stacks=1, embedding_dim=4)


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the marker's existence proves execution."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), "a pickle payload was executed"


@pytest.fixture
def model_dir(tmp_path):
    torch.manual_seed(0)
    return save_model(RecurrentHourglass(TINY), tmp_path / "model",
                      {"preprocessing": {"pixel_scale": 0.5}})


def _torch_zip_with_payload(marker) -> bytes:
    buf = _bytes_io.BytesIO()
    torch.save({"weights": Payload(marker)}, buf)  # torch.save pickles; torch.load would run it
    return buf.getvalue()


def test_pickled_weights_beside_the_config_are_never_loaded(model_dir, marker, capsys):
    (model_dir / "weights.safetensors").unlink()
    (model_dir / "weights.pt").write_bytes(pickle.dumps(Payload(marker)))
    (model_dir / "model.ckpt").write_bytes(_torch_zip_with_payload(marker))
    with pytest.raises(ModelError, match="pickled weights are never loaded"):
        load_model(model_dir)
    rc = main(["track", str(model_dir), "-o", str(model_dir.parent / "res"), "--weights",
               str(model_dir)])
    assert rc == 2 and "error: " in capsys.readouterr().err


@pytest.mark.parametrize("content", ["pickle", "torch zip"])
def test_a_pickle_named_safetensors_is_refused(model_dir, marker, content):
    raw = pickle.dumps(Payload(marker)) if content == "pickle" else _torch_zip_with_payload(marker)
    (model_dir / "weights.safetensors").write_bytes(raw)
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(model_dir)
    with pytest.raises(ModelError):
        EmbeddingStream(model_dir, device="cpu")


def test_config_cannot_carry_code(model_dir, marker):
    (model_dir / "config.json").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(model_dir)
    # Unknown keys (e.g. a class path to import) are refused, not looked up.
    (model_dir / "config.json").write_text(json.dumps(
        {"architecture": {"filters": 8, "__class__": "os.system"}}))
    with pytest.raises(ModelError, match="unknown architecture keys"):
        load_model(model_dir)


def test_saved_recurrent_state_is_not_unpickled(marker, tmp_path):
    """A run's checkpoint (the recurrent state among it) is read without unpickling."""
    from napari_cosine_tracker.core.resume import CHECKPOINT, load_checkpoint

    (tmp_path / CHECKPOINT).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(tmp_path, "any")


def test_project_files_are_not_unpickled(tmp_path, marker):
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, 2:5, 2:5] = 1
    ed = TrackEditor(labels, io.lineage_from_labels(labels))
    folder = ed.save(tmp_path / "p.tracks")
    arrays = dict(np.load(folder / "state.npz"))
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    np.savez(folder / "state.npz", **dict(arrays, lineage=evil))  # pickled inside the npz
    with pytest.raises(ValueError):
        TrackEditor.open(folder)
    with zipfile.ZipFile(folder / "state.npz", "w") as z:  # a raw pickle as a member
        z.writestr("header.npy", pickle.dumps(Payload(marker)))
    with pytest.raises(ValueError):
        TrackEditor.open(folder)


# -- writing stays inside the chosen folder -----------------------------------------------------

def test_project_save_never_writes_through_planted_links(tmp_path):
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, 2:5, 2:5] = 1
    ed = TrackEditor(labels, io.lineage_from_labels(labels))
    folder = ed.save(tmp_path / "p.tracks")
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "precious.npz"
    victim.write_bytes(b"do not touch")
    base = next(folder.glob("base-*.npz"))
    # Links under the project's own file names, pointing outside the project.
    (folder / "state.npz").unlink()
    (folder / "state.npz").symlink_to(victim)
    fake_base = folder / ("base-" + "0" * 32 + ".npz")
    fake_base.symlink_to(victim)
    ed.delete_cell(1, 1)
    ed.save()
    assert victim.read_bytes() == b"do not touch"
    assert not (folder / "state.npz").is_symlink() and not fake_base.exists()
    assert base.exists()
    assert TrackEditor.open(folder).history == ed.history


def test_result_export_replaces_a_link_not_its_target(tmp_path, capsys):
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, 1:4, 1:4] = 1
    target = io.write_ctc_result(tmp_path / "elsewhere_RES", labels)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    link = tmp_path / "chosen" / "01_RES"
    link.parent.mkdir()
    link.symlink_to(target, target_is_directory=True)
    new = np.zeros((3, 8, 8), np.uint16)
    new[:, 4:7, 4:7] = 2
    io.write_ctc_result(link, new)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert not link.is_symlink() and len(list(link.glob("mask*.tif"))) == 3
    # CSV export over a linked file: the link is replaced, the file it named is untouched.
    victim = tmp_path / "victim.csv"
    victim.write_text("precious\n")
    out = tmp_path / "chosen" / "cells.csv"
    out.symlink_to(victim)
    assert main(["export", str(link), "--format", "csv", "-o", str(out), "--overwrite"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "precious\n"
    assert not out.is_symlink() and out.read_text().startswith("id,parent_id,track_id")


def test_track_file_contents_never_name_files(tmp_path):
    """A res_track.txt is numbers only: path-like content is refused, nothing is opened."""
    labels = np.zeros((2, 8, 8), np.uint16)
    labels[:, 1:4, 1:4] = 1
    res = io.write_ctc_result(tmp_path / "01_RES", labels)
    (res / "res_track.txt").write_text("1 0 1 ../../etc/passwd\n")
    with pytest.raises(io.MovieError, match="line 1"):
        io.read_ctc_result(res)
    assert sorted(os.listdir(tmp_path)) == ["01_RES"]
