"""The packaged models by name: listing, resolving, picking them from the CLI."""

from __future__ import annotations

import json

import pytest

from napari_cosine_tracker.core.cli import build_parser, main
from napari_cosine_tracker.core.model import default_model_dir, load_model, read_model_config
from napari_cosine_tracker.core.zoo import DEFAULT_MODEL, ModelError, list_models, resolve_model


def test_zoo_lists_the_default_model_first_with_what_it_is_for():
    models = list_models()
    assert models and models[0].name == DEFAULT_MODEL == "fluorescence"
    assert len({m.name for m in models}) == len(models)
    for m in models:
        assert m.description and m.microscopy  # the picker and `models` show them
        config = json.loads((m.folder / "config.json").read_text())
        assert config["zoo"]["name"] == m.name
        assert config["clustering"]  # each keeps its recommended clustering settings


def test_names_shipped_and_folders_resolve_to_model_folders(tmp_path):
    assert resolve_model(None) == resolve_model("shipped") == resolve_model(DEFAULT_MODEL)
    assert resolve_model(None) == default_model_dir()
    for m in list_models():
        assert resolve_model(m.name) == m.folder
    assert resolve_model(str(tmp_path)) == tmp_path
    assert resolve_model(tmp_path) == tmp_path
    with pytest.raises(ModelError, match="no model called 'flourescence'.*fluorescence"):
        resolve_model("flourescence")
    # a missing folder given as a path is the folder error, not "no model called"
    with pytest.raises(ModelError, match="does not exist"):
        read_model_config(tmp_path / "nowhere")


@pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                    reason="the packaged weights are not in this checkout")
def test_every_packaged_model_loads_by_name():
    for m in list_models():
        model, config = load_model(m.name)
        assert config["zoo"]["name"] == m.name
        assert not model.training


def test_models_command_lists_them_and_track_takes_a_name(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for m in list_models():
        assert m.name in out and m.description in out
    assert "[default]" in out.splitlines()[0]
    for command in (["track", "movie.tif", "-o", "res"], ["batch", "a.tif", "-o", "out"]):
        args = build_parser().parse_args(command + ["--model", "label-free"])
        assert args.model == "label-free"
        # --weights is the older spelling of the same option
        assert build_parser().parse_args(command + ["--weights", "x"]).model == "x"
        assert build_parser().parse_args(command).model is None


def test_track_with_an_unknown_model_name_says_which_exist(tmp_path, capsys):
    import numpy as np
    import tifffile

    tifffile.imwrite(tmp_path / "m.tif", np.zeros((2, 32, 32), np.uint8))
    rc = main(["track", str(tmp_path / "m.tif"), "-o", str(tmp_path / "res"), "--model", "nuclei",
               "--scale", "1"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "no model called 'nuclei'" in err and DEFAULT_MODEL in err


def test_package_model_stores_half_precision_weights_that_run_alike(tmp_path):
    import torch
    from safetensors.torch import load_file

    from napari_cosine_tracker.core.model import (
        ModelConfig,
        RecurrentHourglass,
        package_model,
        save_model,
    )

    torch.manual_seed(0)
    model = RecurrentHourglass(ModelConfig(filters=8, levels=3, stacks=2, embedding_dim=4)).eval()
    save_model(model, tmp_path / "trained", {"clustering": {"min_samples": 8}})
    (tmp_path / "trained" / "loss.csv").write_text("step,loss\n1,0.5\n")
    zoo = {"name": "mine", "description": "my cells", "microscopy": "fluorescence"}
    out = package_model(tmp_path / "trained", tmp_path / "packaged", zoo, note="test")
    assert all(t.dtype == torch.float16 for t in load_file(str(out / "weights.safetensors")).values())
    assert (out / "loss.csv").read_text().startswith("step,loss")
    packaged, config = load_model(out)
    assert config["zoo"] == zoo and config["clustering"] == {"min_samples": 8}
    assert not list(out.glob(".*tmp"))  # written atomically, nothing left behind
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        a, b = model(x)[0], packaged(x)[0]
    assert torch.nn.functional.cosine_similarity(a, b, dim=1).min() > 0.999


def test_auto_picks_label_free_for_a_bright_background():
    import numpy as np

    from napari_cosine_tracker.core.synthetic import make_synthetic_movie
    from napari_cosine_tracker.core.zoo import choose_model

    images = make_synthetic_movie(n_frames=3, shape=(96, 96), n_cells=5, seed=2).images
    assert choose_model(images)[0] == "fluorescence"  # bright cells on a dark background
    bright = (images.max() - images) // 2 + images.max() // 3  # mid-grey with darker cells
    name, why = choose_model(bright)
    assert name == "label-free" and "transmitted light" in why
    assert choose_model(np.zeros((2, 8, 8), np.uint8))[0] == "fluorescence"  # blank: default


def test_auto_on_the_shared_movies(shared_data):
    """Each shared movie's first, middle and last frames go to the model of its kind."""
    from napari_cosine_tracker.core.io import read_movie
    from napari_cosine_tracker.core.zoo import choose_model

    expected = {"Fluo-N2DH-SIM+": "fluorescence", "Fluo-N2DH-GOWT1": "fluorescence",
                "Fluo-C2DL-MSC": "fluorescence", "DIC-C2DH-HeLa": "label-free",
                "PhC-C2DL-PSC": "label-free"}
    for name, model in expected.items():
        assert choose_model(read_movie(shared_data / "ctc" / name / "01"))[0] == model, name
