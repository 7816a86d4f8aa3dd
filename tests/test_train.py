"""Training: a short run on a synthetic movie lowers the loss; checkpoints resume; CLI."""

import csv
import json

import numpy as np
import pytest

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.loss import IGNORE
from napari_cosine_tracker.core.model import ModelConfig, load_model
from napari_cosine_tracker.core.train import TrainConfig, load_ctc_sequence, synthetic_sequence, train

TINY = ModelConfig(filters=12, levels=3, stacks=1, embedding_dim=4)


def losses(model_dir):
    with open(model_dir / "loss.csv") as fh:
        return [float(r["loss"]) for r in csv.DictReader(fh)]


@pytest.fixture(scope="module")
def sequence():
    return synthetic_sequence(seed=1, n_frames=8, shape=(128, 128), pixel_scale=0.5)


def test_short_training_lowers_the_loss(sequence, tmp_path):
    cfg = TrainConfig(clip_length=3, crop=48, steps=50, lr=3e-3, lr_final=1e-3, r_n=8, zoom=(1.0, 1.0),
                      checkpoint_every=1000, seed=0)
    out = train([sequence], tmp_path / "m", TINY, cfg, progress=False)
    curve = losses(out)
    assert len(curve) == 50
    start, end = np.mean(curve[:10]), np.mean(curve[-10:])
    assert end < 0.7 * start, (start, end)
    model, config = load_model(out)
    assert config["training"]["steps"] == 50
    assert config["preprocessing"]["pixel_scale"] == 0.5


def test_resume_continues_from_checkpoint(sequence, tmp_path):
    cfg = TrainConfig(clip_length=2, crop=32, steps=4, r_n=8, checkpoint_every=2, seed=3)
    train([sequence], tmp_path / "m", TINY, cfg, progress=False)
    cfg.steps = 6
    train([sequence], tmp_path / "m", TINY, cfg, resume=True, progress=False)
    assert [int(r) for r in np.loadtxt(tmp_path / "m" / "loss.csv", delimiter=",", skiprows=1)[:, 0]] == list(range(1, 7))
    meta = json.loads((tmp_path / "m" / "checkpoint" / "checkpoint.json").read_text())
    assert meta["step"] == 6
    assert not list((tmp_path / "m").rglob("*.pt")) and not list((tmp_path / "m").rglob("*.pkl"))


def test_train_cli(tmp_path):
    rc = main(["train", "synthetic:2", "-o", str(tmp_path / "m"), "--filters", "8", "--levels", "3",
               "--stacks", "1", "--embedding-dim", "4", "--clip-length", "2", "--crop", "32",
               "--steps", "2", "--device", "cpu", "--space-to-depth", "2",
               "--cell-diameter", "10", "36"])
    assert rc == 0
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    # the sizes it learnt, which the size estimate brings a movie's cells into
    assert config["preprocessing"]["cell_diameter_range"] == [10.0, 36.0]
    assert config["training"]["command"].startswith("napari-cosine-tracker") or config["training"]["command"]
    assert config["architecture"]["filters"] == 8 and config["architecture"]["space_to_depth"] == 2
    # the training cells' size (model pixels), which estimate_scale brings new movies to
    from napari_cosine_tracker.core.cellsize import frames_cell_diameter
    from napari_cosine_tracker.core.train import resolve_data

    expected = frames_cell_diameter(resolve_data("synthetic:2", 0.5, 0.0).labels)
    assert config["preprocessing"]["cell_diameter"] == pytest.approx(expected, abs=0.01)
    assert 8 < expected < 40
    # The trained blocked model embeds a movie at its own resolution.
    from napari_cosine_tracker.core.inference import EmbeddingStream

    emb = EmbeddingStream(tmp_path / "m", device="cpu").push(np.random.default_rng(0).random((37, 50)))
    assert emb.shape[0] == 4 and np.isfinite(emb).all()


def test_marker_only_ground_truth_is_masked(shared_data):
    """GOWT1 has TRA markers, not full masks: unlabelled cell bodies must be ignored, not background."""
    seq = load_ctc_sequence(shared_data / "ctc" / "Fluo-N2DH-GOWT1" / "01", frames=[0, 1], pixel_scale=0.25)
    assert seq.notes["tra_full_masks"] is False
    lab = seq.labels
    assert (lab == IGNORE).any() and (lab > 0).any()
    sim = load_ctc_sequence(shared_data / "ctc" / "Fluo-N2DH-SIM+" / "01", frames=[0, 1], pixel_scale=0.25)
    assert sim.notes["tra_full_masks"] is True and not (sim.labels == IGNORE).any()
    # Instances are track ids: the same cell keeps its id from frame to frame.
    assert set(np.unique(sim.labels[0])[1:]) & set(np.unique(sim.labels[1])[1:])


def test_fine_tune_starts_from_a_model_folder(sequence, tmp_path):
    """--init: the first step's loss is the given model's, and its architecture and scale are kept."""
    cfg = TrainConfig(clip_length=3, crop=48, steps=40, lr=3e-3, lr_final=1e-3, r_n=8, zoom=(1.0, 1.0),
                      checkpoint_every=1000, seed=0)
    trained = train([sequence], tmp_path / "a", TINY, cfg, progress=False)
    trained_config = json.loads((trained / "config.json").read_text())
    trained_config["clustering"] = {"min_cluster_size": 77}
    (trained / "config.json").write_text(json.dumps(trained_config))
    fresh = TrainConfig(clip_length=3, crop=48, steps=3, r_n=8, zoom=(1.0, 1.0), seed=0, pixel_scale=1.0,
                        init=str(trained))
    tuned = train([sequence], tmp_path / "b", ModelConfig(filters=4, levels=2, stacks=1, embedding_dim=2), fresh,
                  progress=False)
    config = json.loads((tuned / "config.json").read_text())
    assert config["architecture"]["filters"] == TINY.filters
    assert config["preprocessing"]["pixel_scale"] == 0.5
    assert config["training"]["config"]["init"] == str(trained)
    assert config["clustering"] == {"min_cluster_size": 77}  # recommended until re-tuned
    # Resuming a fine-tune needs no architecture flags: they come from the init model.
    fresh.steps = 4
    train([sequence], tuned, ModelConfig(filters=4, levels=2, stacks=1, embedding_dim=2), fresh, resume=True,
          progress=False)
    assert json.loads((tuned / "config.json").read_text())["training"]["steps"] == 4
    scratch = train([sequence], tmp_path / "c", TINY, TrainConfig(clip_length=3, crop=48, steps=3, r_n=8,
                    zoom=(1.0, 1.0), seed=0), progress=False)
    assert np.mean(losses(tuned)) < 0.8 * np.mean(losses(scratch))


def test_fine_tune_the_shipped_model_from_the_cli(tmp_path):
    rc = main(["train", "synthetic:2", "-o", str(tmp_path / "m"), "--init", "shipped", "--clip-length", "2",
               "--crop", "32", "--steps", "1", "--device", "cpu"])
    assert rc == 0
    shipped = load_model()[1]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["architecture"] == shipped["architecture"]
    assert config["clustering"] == shipped["clustering"]


def test_fine_tune_on_an_exported_result(tmp_path):
    """IMAGES=RESULT: a movie and its (corrected, exported) CTC result folder train like GT."""
    from napari_cosine_tracker.core.io import write_ctc_result, write_movie_folder
    from napari_cosine_tracker.core.synthetic import make_synthetic_movie
    from napari_cosine_tracker.core.train import load_result_sequence, resolve_data

    movie = make_synthetic_movie(n_frames=4, shape=(64, 64), n_cells=3, seed=2)
    images = write_movie_folder(tmp_path / "01", movie.images)
    result = write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    seq = load_result_sequence(images, result, pixel_scale=1.0)
    assert seq.images.shape == (4, 64, 64) and np.array_equal(seq.labels, movie.labels)
    assert seq.notes["tra_full_masks"] is True
    assert len(resolve_data(f"{images}={result}", 0.5, holdout=0.25).images) == 3  # holdout as for CTC data

    rc = main(["train", f"{images}={result}", "-o", str(tmp_path / "m"), "--filters", "8", "--levels", "3",
               "--stacks", "1", "--embedding-dim", "4", "--clip-length", "2", "--crop", "32", "--steps", "2",
               "--holdout", "0", "--device", "cpu"])
    assert rc == 0
    data = json.loads((tmp_path / "m" / "config.json").read_text())["training"]["data"]
    assert data[0]["name"] == "01=01_RES" and data[0]["frames"] == [0, 3]

    short = write_ctc_result(tmp_path / "short_RES", movie.labels[:3], None)
    with pytest.raises(ValueError, match="has 3 masks"):
        load_result_sequence(images, short)
    with pytest.raises(FileNotFoundError, match="IMAGES=RESULT"):
        resolve_data(f"{images}={tmp_path / 'missing_RES'}", 0.5, 0.0)


def test_stopping_training_early_keeps_the_model(sequence, tmp_path):
    """iter_train yields each step; leaving the loop (a GUI's Cancel) still saves the model."""
    from napari_cosine_tracker.core.train import iter_train

    cfg = TrainConfig(clip_length=2, crop=32, steps=100, r_n=8, checkpoint_every=1000, seed=0)
    seen = []
    steps = iter_train([sequence], tmp_path / "m", TINY, cfg, progress=False)
    for step, loss in steps:
        seen.append(step)
        assert np.isfinite(loss)
        if step == 3:
            break
    steps.close()
    assert seen == [1, 2, 3]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["training"]["steps"] == 3
    assert len(losses(tmp_path / "m")) == 3


def _agreement(a, b, images) -> float:
    """Mean cosine between two models' embeddings over a movie, state carried."""
    import torch

    sa = sb = None
    cos = []
    with torch.no_grad():
        for frame in images:
            x = torch.from_numpy(frame)[None, None]
            ea, sa = a(x, sa)
            eb, sb = b(x, sb)
            cos.append(float(torch.nn.functional.cosine_similarity(ea, eb, dim=1).mean()))
    return float(np.mean(cos))


def test_a_teacher_is_learnt_faster_than_from_ground_truth_alone(sequence, tmp_path):
    """--teacher: a different architecture learns the teacher's embeddings pixel by pixel."""
    cfg = TrainConfig(clip_length=3, crop=48, steps=40, lr=3e-3, lr_final=1e-3, r_n=8, zoom=(1.0, 1.0),
                      checkpoint_every=1000, seed=0)
    teacher_dir = train([sequence], tmp_path / "teacher", TINY, cfg, progress=False)
    student = ModelConfig(filters=16, levels=2, stacks=1, embedding_dim=4, space_to_depth=2)
    short = TrainConfig(clip_length=3, crop=48, steps=30, lr=3e-3, lr_final=1e-3, r_n=8, zoom=(1.0, 1.0),
                        checkpoint_every=1000, seed=1)
    plain = train([sequence], tmp_path / "plain", student, short, progress=False)
    short.teacher = str(teacher_dir)
    distilled = train([sequence], tmp_path / "distilled", student, short, progress=False)
    assert json.loads((distilled / "config.json").read_text())["training"]["config"]["teacher"] == str(teacher_dir)
    teacher = load_model(teacher_dir)[0]
    with_teacher = _agreement(load_model(distilled)[0], teacher, sequence.images)
    without = _agreement(load_model(plain)[0], teacher, sequence.images)
    assert with_teacher > without + 0.3, (with_teacher, without)


def test_a_teacher_that_does_not_fit_is_refused(sequence, tmp_path):
    cfg = TrainConfig(clip_length=2, crop=32, steps=1, r_n=8, teacher="shipped")  # shipped: 8 dimensions
    with pytest.raises(ValueError, match="teacher 'shipped' does not fit.*8 embedding dimensions"):
        train([sequence], tmp_path / "m", TINY, cfg, progress=False)


def test_silver_truth_teaches_whole_cells_with_track_ids(shared_data):
    """DIC-HeLa has gold masks on 9 frames only and silver truth on every frame: a frame
    without gold masks is labelled with the silver masks, each under the TRA id it covers."""
    import tifffile

    from napari_cosine_tracker.core.train import resolve_data

    seq_dir = shared_data / "ctc" / "DIC-C2DH-HeLa" / "01"
    seq = load_ctc_sequence(seq_dir, frames=[1], pixel_scale=1.0)  # frame 1: no gold mask
    lab = seq.labels[0]
    silver = tifffile.imread(seq_dir.with_name("01_ST") / "SEG" / "man_seg001.tif")
    tra = tifffile.imread(seq_dir.with_name("01_GT") / "TRA" / "man_track001.tif")
    assert seq.notes["silver_truth_frames"] == 1
    # whole cells, not markers: the silver foreground is (nearly all) labelled
    assert ((lab > 0) & (silver > 0)).sum() >= 0.9 * (silver > 0).sum()
    assert set(np.unique(lab[lab > 0]).tolist()) <= set(np.unique(tra[tra > 0]).tolist())
    # cell-size range: DIC's 114-px cells come out at the range's top, 36 model pixels
    big = resolve_data(str(seq_dir), 0.5, holdout=0.9, cell_diameter=(10, 36))
    assert big.notes["cell_diameter_px"] == pytest.approx(114, rel=0.1)
    assert big.notes["pixel_scale"] == pytest.approx(36 / big.notes["cell_diameter_px"], rel=1e-3)


def test_tune_picks_clustering_on_training_frames_and_survives_settings_that_find_nothing(
        tmp_path, make_tiny_model):
    """A candidate that finds no cell at all scores 0 (it used to stop the tuning), and the
    winner lands in the model's config."""
    from napari_cosine_tracker.core.io import write_ctc_gt, write_movie_folder
    from napari_cosine_tracker.core.synthetic import make_synthetic_movie
    from napari_cosine_tracker.core.tune import tune_clustering

    m = make_synthetic_movie(n_frames=6, shape=(64, 64), n_cells=3, seed=1)
    seq = write_movie_folder(tmp_path / "S" / "01", m.images)
    write_ctc_gt(tmp_path / "S" / "01_GT", m.labels, m.lineage)
    model = make_tiny_model()
    grid = {"fg_threshold": [-0.99, 0.15], "min_cluster_size": [20]}
    out = tune_clustering(model, [seq], holdout=0.0, window=4, grid=grid, device="cpu",
                          log=lambda *_: None)
    scores = {h["params"]["fg_threshold"]: h["score"] for h in out["history"]}
    assert scores[-0.99] == 0.0  # nothing is foreground: no cells, the worst score
    config = json.loads((model / "config.json").read_text())
    assert config["clustering"]["fg_threshold"] == out["best"]["fg_threshold"]


def test_blur_and_texture_augmentations(sequence):
    """Blur takes fine detail away; texture makes a uniformly bright cell patchy while the
    image keeps its brightness; the labels are never touched. Off by default (recorded
    recipes draw the same random numbers as before)."""
    import torch

    from napari_cosine_tracker.core.train import ClipSampler, _blur, _texture

    rng = np.random.default_rng(0)
    img = torch.zeros(2, 64, 64)
    img[:, 16:48, 16:48] = 1.0
    img += 0.1 * torch.from_numpy(rng.standard_normal((2, 64, 64))).float()
    fine = lambda x: float((x[:, 1:, :] - x[:, :-1, :]).abs().mean())  # noqa: E731
    assert fine(_blur(img, rng)) < 0.7 * fine(img)
    cell = torch.zeros(1, 64, 64)
    cell[:, 16:48, 16:48] = 1.0
    tex = _texture(cell, rng)
    inside = tex[0, 16:48, 16:48]
    assert float(inside.std()) > 0.05 and float(tex[0, :8, :8].abs().max()) == 0.0
    assert abs(float(tex.sum() / cell.sum()) - 1.0) < 0.3

    assert TrainConfig().blur == TrainConfig().texture == 0.0
    plain = ClipSampler([sequence], TrainConfig(clip_length=3, crop=48), np.random.default_rng(5))
    aug = ClipSampler([sequence], TrainConfig(clip_length=3, crop=48, blur=1.0, texture=1.0),
                      np.random.default_rng(5))
    (img_p, lab_p), (img_a, lab_a) = plain.sample(), aug.sample()
    assert img_a.shape == img_p.shape and torch.isfinite(img_a).all()
    assert torch.equal(lab_a, lab_p) and not torch.equal(img_a, img_p)


def test_relief_augmentation_draws_cells_as_dic_does(sequence):
    """A relief clip shows a bright cell as a bright edge on one side and a dark edge on the
    other over a mid-grey background, in the same direction in every frame, normalised like
    a movie; the labels are untouched and the option is off by default."""
    import torch

    from napari_cosine_tracker.core.train import ClipSampler, _relief

    img = torch.zeros(2, 64, 64)
    img[:, 20:44, 20:44] = 1.0
    out = _relief(img, np.random.default_rng(3))
    assert out.shape == img.shape and torch.isfinite(out).all()
    grey = float(out[:, :8, :8].mean())
    assert 0.2 < grey < 0.8  # flat background: mid-grey, not black
    rows, cols = out[0, 20:44, 18:46], out[0, 18:46, 20:44]
    # one border of the square is brighter and the opposite one darker than the background
    edges = [rows[:, :4].mean(), rows[:, -4:].mean(), cols[:4].mean(), cols[-4:].mean()]
    assert max(float(e) for e in edges) > grey + 0.1 and min(float(e) for e in edges) < grey - 0.1
    assert torch.allclose(out[0], out[1])  # one shear direction for the clip

    assert TrainConfig().relief == 0.0
    plain = ClipSampler([sequence], TrainConfig(clip_length=3, crop=48), np.random.default_rng(5))
    aug = ClipSampler([sequence], TrainConfig(clip_length=3, crop=48, relief=1.0), np.random.default_rng(5))
    (img_p, lab_p), (img_a, lab_a) = plain.sample(), aug.sample()
    assert torch.equal(lab_a, lab_p) and not torch.equal(img_a, img_p)


def test_synthetic_spec_sets_the_cell_count():
    """``synthetic:SEED:CELLS`` gives a sparse movie (the near-empty frames models must learn
    to leave empty); bad specs name the form to write."""
    from napari_cosine_tracker.core.train import resolve_data

    sparse = resolve_data("synthetic:9:1", 0.5, 0.0)
    dense = resolve_data("synthetic:9", 0.5, 0.0)
    assert sparse.name == "synthetic:9:1" and dense.name == "synthetic:9"
    count = lambda seq: len(np.unique(seq.labels[0])) - 1  # noqa: E731
    assert count(sparse) == 1 and count(dense) == 10
    for bad in ("synthetic:x", "synthetic:1:0", "synthetic:1:2:3"):
        with pytest.raises(ValueError, match="synthetic"):
            resolve_data(bad, 0.5, 0.0)
