"""Estimating the resize factor from the model's own cells (core.cellsize)."""

import copy
import math

import numpy as np
import pytest
from skimage.draw import disk
from skimage.transform import rescale

from napari_cosine_tracker.core.cellsize import (
    AUTO,
    MIN_AGREEMENT,
    ScaleEstimate,
    agreement,
    cell_diameter,
    estimate_scale,
    iter_estimate_scale,
    model_cell_diameter,
    model_cell_range,
    parse_scale,
    pieces_of_larger_cells,
)
from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.io import read_ctc_result, write_movie_folder
from napari_cosine_tracker.core.model import default_model_dir, load_model
from napari_cosine_tracker.core.synthetic import make_synthetic_movie

shipped = pytest.mark.skipif(not (default_model_dir() / "weights.safetensors").is_file(),
                             reason="the shipped model is not installed")


def test_cell_diameter_is_area_weighted():
    lab = np.zeros((200, 200), np.int32)
    lab[disk((50, 50), 10)] = 1
    lab[disk((130, 130), 30)] = 2
    lab[disk((40, 150), 3)] = 3  # a fragment: too little area to move the median
    d, n = cell_diameter(lab)
    assert n == 3
    assert d == pytest.approx(60, rel=0.03)  # the large cell holds most of the area
    assert cell_diameter(np.zeros((5, 5), int)) == (pytest.approx(math.nan, nan_ok=True), 0)


def test_parse_scale_and_model_diameter():
    assert parse_scale("auto") == AUTO and parse_scale(" AUTO ") == AUTO
    assert parse_scale("2") == 2.0 and parse_scale(0.5) == 0.5
    for bad in ("two", 0, -1, "100"):
        with pytest.raises(ValueError, match="scale must be"):
            parse_scale(bad)
    assert model_cell_diameter({"preprocessing": {"cell_diameter": 21.5}}) == 21.5
    assert model_cell_diameter({}) > 0  # older configs: the documented default


@shipped
def test_estimate_on_a_single_frame_and_a_blank_movie():
    movie = make_synthetic_movie(n_frames=1, shape=(128, 128), n_cells=5, seed=4).images
    est = estimate_scale(movie, device="cpu")
    assert est.frames == (0, 1) and est.scale > 1 and np.isfinite(est.cell_diameter)
    blank = estimate_scale(np.zeros((3, 64, 64), np.uint16), device="cpu")
    assert not blank.converged and "set the resize factor by hand" in blank.describe()
    # no cells is no answer: the starting factor is kept and said so
    assert blank.scale == 1.0 and blank.unsure == "no cells found" and "kept resize factor 1.00" in blank.describe()


def one_size(config: dict) -> dict:
    """The shipped model's config as if it had been trained on cells of one size."""
    config = copy.deepcopy(config)
    config["preprocessing"].pop("cell_diameter_range", None)
    config.get("training", {}).get("config", {}).pop("cell_diameter", None)
    assert model_cell_range(config) is None
    return config


@shipped
def test_estimate_follows_the_cell_size():
    """The same cells at twice the width need half the resize factor, and the factor found
    brings them to the model's cell diameter."""
    model, config = load_model(None, device="cpu")
    config = one_size(config)
    movie = make_synthetic_movie(n_frames=4, shape=(192, 192), n_cells=8, seed=3).images
    big = np.stack([rescale(f.astype(np.float32), 2, order=1, preserve_range=True) for f in movie])
    small = estimate_scale(movie, model=model, config=config, device="cpu")
    large = estimate_scale(big, model=model, config=config, device="cpu")
    assert isinstance(small, ScaleEstimate) and small.converged and large.converged
    assert small.frames == (1, 4) and len(small.steps) >= 1
    assert large.scale / small.scale == pytest.approx(0.5, rel=0.2)
    assert large.cell_diameter / small.cell_diameter == pytest.approx(2.0, rel=0.2)
    # at the estimate, the model's cells are the size it was trained on
    last = small.steps[-1]
    assert last[1] == pytest.approx(model_cell_diameter(config), rel=0.1)
    assert "resize by" in small.describe()


@shipped
def test_a_model_trained_on_a_size_range_enlarges_small_cells_less_where_it_costs():
    """Small cells are enlarged to the model's median size up to a factor of 2; beyond, a
    model trained on a size range enlarges them only halfway (in log) from its smallest
    trained size to the median; without a range, always to the median."""
    from napari_cosine_tracker.core.cellsize import CHEAP_ENLARGEMENT

    model, config = load_model(None, device="cpu")
    config = one_size(config)
    movie = make_synthetic_movie(n_frames=4, shape=(192, 192), n_cells=8, seed=3).images
    small = np.stack([rescale(f.astype(np.float32), 0.4, order=1, preserve_range=True)
                      for f in movie])  # cells 0.4 as wide: a factor above 2 is needed
    plain = estimate_scale(small, model=model, config=config, device="cpu")
    assert plain.scale > CHEAP_ENLARGEMENT
    target = model_cell_diameter(config)
    ranged = copy.deepcopy(config)
    ranged["preprocessing"]["cell_diameter_range"] = [target / 4, target * 2]
    assert model_cell_range(ranged) == (target / 4, target * 2)
    est = estimate_scale(small, model=model, config=ranged, device="cpu")
    assert est.scale == pytest.approx(max(CHEAP_ENLARGEMENT, plain.scale * 0.5), rel=0.1)
    # small cells brought down to a mild factor by the range are not checked for pieces as
    # mild enlargements are (dense small cells agree less; not enlarging them loses most)
    import napari_cosine_tracker.core.cellsize as cellsize

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cellsize, "pieces_of_larger_cells", lambda steps, scale: "pieces")
        kept = estimate_scale(small, model=model, config=ranged, device="cpu")
    assert kept.scale == pytest.approx(est.scale, rel=0.05) and not kept.unsure
    # cells needing a small enlargement keep the median, range or not
    mild = estimate_scale(movie, model=model, config=ranged, device="cpu")
    assert mild.scale == pytest.approx(estimate_scale(movie, model=model, config=config,
                                                      device="cpu").scale, rel=0.05)


@shipped
def test_estimate_on_a_handful_of_cells_says_it_is_unsure_and_keeps_the_factor():
    """One cell is no measure of a movie: the estimate keeps the starting factor and says
    why, instead of proposing a resize that could break every cell. (The count includes the
    specks the estimate's small clusters keep: the default model since 2026-12-07 finds 4-6
    objects in frames of two cells, so one cell is what this test can show.)"""
    movie = make_synthetic_movie(n_frames=3, shape=(128, 128), n_cells=1, seed=4, enter_rate=0,
                                 divisions=False).images
    est = estimate_scale(movie, device="cpu")
    assert est.unsure.startswith("only ") and est.scale == 1.0
    assert "Could not tell the cell size" in est.describe() and "by hand" in est.describe()


def test_agreement_of_two_segmentations_of_one_frame():
    lab = np.zeros((40, 40), int)
    lab[2:12, 2:12], lab[20:30, 20:36] = 1, 2
    relabelled = np.where(lab == 1, 7, np.where(lab == 2, 3, 0))
    assert agreement(lab, lab) == 1.0 and agreement(lab, relabelled) == 1.0
    cut = lab.copy()
    cut[20:30, 28:36] = 5  # the larger cell cut in two halves
    # cell 1 (100 px) agrees; cell 2 (160 px) overlaps its best half by IoU 0.5
    assert agreement(lab, cut) == pytest.approx((100 * 1.0 + 160 * 0.5) / 260)
    assert np.isnan(agreement(np.zeros_like(lab), lab))


# Rounds (scale, diameter in model pixels, cells, coherence, agreement, cells per megapixel)
# of the fluorescence model's estimate on movies it never trained on (docs/method.md, "Cell
# size"): Fluo-C2DL-MSC/01, whose large whole cells it cuts into pieces, and two synthetic
# nuclei movies, one clean (seed 0), one it cuts mildly (seed 51).
MSC_STEPS = [
    (1.0, 23.857, 91, 0.877, 0.805, 110.257),
    (1.174, 33.983, 109, 0.863, 0.933, 150.068),
    (0.967, 20.928, 100, 0.894, 0.873, 121.162),
    (1.294, 28.702, 134, 0.905, 0.884, 213.626),
    (2.588, 381.447, 46, 0.789, 0.28, 293.337),
    (0.647, 21.23, 52, 0.854, 0.837, 63.004),
    (0.853, 21.88, 91, 0.871, 0.867, 110.257),
    (1.092, 29.032, 117, 0.9, 0.877, 149.92),
]
SEED0_STEPS = [
    (1.0, 16.116, 13, 0.986, 0.988, 198.364),
    (1.737, 27.754, 14, 0.983, 1.0, 213.623),
    (3.475, 49.353, 46, 0.84, 0.979, 701.904),
    (1.971, 31.815, 16, 0.969, 1.0, 244.141),
]
SEED51_STEPS = [
    (1.0, 15.554, 15, 0.966, 0.937, 228.882),
    (1.8, 26.702, 16, 0.922, 0.937, 244.141),
    (1.471, 22.025, 15, 0.947, 0.991, 228.882),
    (1.87, 29.597, 12, 0.854, 0.982, 183.105),
    (1.769, 26.511, 16, 0.914, 0.912, 244.141),
]


def test_pieces_of_larger_cells_are_told_from_cells_by_how_they_hold_and_multiply():
    reason = pieces_of_larger_cells(MSC_STEPS, 1.294)
    assert "may be pieces of larger cells" in reason and "1.6 times as many" in reason
    assert pieces_of_larger_cells(SEED0_STEPS, 1.737) == ""  # clean cells
    # cut a little (agreement 0.945) but not multiplying: cells, kept
    assert pieces_of_larger_cells(SEED51_STEPS, 1.768) == ""
    # either sign alone is not enough: pieces that hold, or cells that do not multiply
    held = [st[:4] + (0.99,) + st[5:] for st in MSC_STEPS]
    assert pieces_of_larger_cells(held, 1.294) == ""
    flat = [st[:5] + (110.0,) for st in MSC_STEPS]
    assert pieces_of_larger_cells(flat, 1.294) == ""
    # nothing near the factor, or no round far enough from it to compare with: no verdict
    assert pieces_of_larger_cells(MSC_STEPS[:1], 1.294) == ""
    assert pieces_of_larger_cells(MSC_STEPS[:1], 1.05) == ""


@shipped
def test_a_mild_enlargement_is_refused_where_the_cells_look_like_pieces(monkeypatch):
    """Where the cells found near a mild enlargement look like pieces of larger cells, the
    movie keeps its size and the estimate says why."""
    import napari_cosine_tracker.core.cellsize as cellsize

    movie = make_synthetic_movie(n_frames=5, shape=(256, 256), seed=0).images
    est = estimate_scale(movie, device="cpu")
    assert 1.0 < est.scale <= cellsize.CHEAP_ENLARGEMENT and not est.unsure
    assert all(len(st) == 6 for st in est.steps)
    near = [st for st in est.steps if abs(math.log(st[0] / est.scale)) <= cellsize.NEAR]
    assert near and min(st[4] for st in near) >= MIN_AGREEMENT  # clean synthetic nuclei hold
    monkeypatch.setattr(cellsize, "pieces_of_larger_cells", lambda steps, scale: "pieces")
    pieces = estimate_scale(movie, device="cpu")
    assert pieces.scale == 1.0 and pieces.unsure == "pieces"
    assert "Could not tell the cell size" in pieces.describe()


@shipped
def test_estimate_steps_can_be_followed_and_stopped():
    movie = make_synthetic_movie(n_frames=3, shape=(128, 128), n_cells=5, seed=4).images
    steps = iter_estimate_scale(movie, device="cpu", initial=4.0)
    first = next(steps)  # (scale, diameter in model pixels, cells, coherence, agreement)
    assert first[0] == 4.0 and first[1] > 0 and first[2] >= 1
    steps.close()  # a cancelled estimate leaves nothing behind


@shipped
def test_cli_track_estimates_the_scale_by_default(tmp_path, capsys):
    movie = make_synthetic_movie(n_frames=4, shape=(128, 128), n_cells=5, seed=6)
    images = write_movie_folder(tmp_path / "01", movie.images)
    assert main(["track", str(images), "-o", str(tmp_path / "RES"), "--device", "cpu",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "pixels across: resize by" in out
    labels, lineage = read_ctc_result(tmp_path / "RES")
    assert labels.shape == movie.images.shape and len(lineage) > 0


def test_cli_rejects_a_bad_scale(tmp_path, capsys):
    movie = make_synthetic_movie(n_frames=2, shape=(64, 64), n_cells=2, seed=1)
    images = write_movie_folder(tmp_path / "01", movie.images)
    assert main(["track", str(images), "-o", str(tmp_path / "RES"), "--scale", "big"]) == 2
    assert "scale must be a number" in capsys.readouterr().err
    assert not (tmp_path / "RES").exists()


def test_the_estimate_clusters_with_its_own_settings_not_the_model_s_recommendations(
        make_tiny_model, monkeypatch):
    """A model's recommended clustering (tuned for tracking) does not move the size estimate:
    its rules were measured with its own settings (cellsize.ESTIMATE_CLUSTERING)."""
    import json

    import napari_cosine_tracker.core.cluster as cluster
    from napari_cosine_tracker.core.cellsize import ESTIMATE_CLUSTERING

    model_dir = make_tiny_model()
    config = json.loads((model_dir / "config.json").read_text())
    config["clustering"] = {"fg_threshold": 0.7, "coord_scale": 90.0, "min_cluster_size": 200,
                            "min_object_size": 120}
    (model_dir / "config.json").write_text(json.dumps(config))
    seen = []
    real = cluster.PairClustering

    class Recording(real):
        def __init__(self, emb_a, emb_b, params, **kw):
            seen.append(params)
            super().__init__(emb_a, emb_b, params, **kw)

    monkeypatch.setattr(cluster, "PairClustering", Recording)
    movie = make_synthetic_movie(n_frames=3, shape=(64, 64), seed=0).images
    estimate_scale(movie, model_dir, device="cpu", max_rounds=1)
    assert seen and all(p == ESTIMATE_CLUSTERING for p in seen)


def test_describe_counts_the_cells_the_answer_rests_on():
    """The line shown to the user counts the cells of the round nearest the answer, not of
    the last round tried (a rejected second settle that broke the frames into specks)."""
    steps = [(1.0, 12.8, 4, 0.99, 0.98, 61.0), (2.27, 23.4, 12, 0.99, 0.99, 183.0),
             (5.67, 24.7, 355, 0.92, float("nan"), 1.1e4)]
    est = ScaleEstimate(scale=2.0, cell_diameter=21.0, converged=True, frames=(11, 14), steps=steps, cells=12)
    assert "12 cells" in est.describe() and "355" not in est.describe()
