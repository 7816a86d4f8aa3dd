"""napari contributions without the widget: manifest, reader, writer and sample data.

Run under a display (``xvfb-run -a pytest tests/test_plugin_io.py``): the viewer tests use
napari's ``make_napari_viewer`` fixture.
"""

from pathlib import Path

import napari
import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core.io import read_ctc_result, write_ctc_result, write_movie_folder
from napari_cosine_tracker.core.synthetic import make_synthetic_movie
from napari_cosine_tracker.plugin.layers import (
    LINEAGE_KEY,
    division_graph,
    lineage_for_labels,
    tracks_from_labels,
)
from napari_cosine_tracker.plugin.reader import napari_get_reader, read_path

PLUGIN = "napari-cosine-tracker"


@pytest.fixture(scope="module")
def small():
    return make_synthetic_movie(n_frames=8, shape=(96, 96), n_cells=4, seed=5,
                                division_rate=0.3)


def test_manifest_validates_and_imports():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution(PLUGIN)
    pm.validate_imports()  # every python_name resolves
    assert "Segment and track cells" in {w.display_name for w in pm.contributions.widgets}
    assert len(pm.contributions.sample_data) == 2


def test_npe2_validate_cli():
    import subprocess
    import sys

    npe2 = Path(sys.executable).parent / "npe2"
    r = subprocess.run([str(npe2), "validate", PLUGIN], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_tracks_from_labels_centroids_and_graph(small):
    data = tracks_from_labels(small.labels)
    # one point per cell per frame, at its centroid
    n_cells = sum(len(np.unique(f)) - 1 for f in small.labels)
    assert data.shape == (n_cells, 4)
    tid, t = int(data[0, 0]), int(data[0, 1])
    ys, xs = np.nonzero(small.labels[t] == tid)
    assert np.allclose(data[0, 2:], [ys.mean(), xs.mean()])
    graph = division_graph(small.lineage, np.unique(data[:, 0]))
    expected = {int(r[0]): [int(r[3])] for r in small.lineage if r[3]}
    assert graph == expected and graph, "the sample movie should contain divisions"


def test_lineage_for_edited_labels_keeps_divisions(small):
    labels = small.labels.copy()
    lin = small.lineage
    # a painter deleted the last frame of a track without daughters
    row = next(r for r in lin if r[2] > r[1] and not (lin[:, 3] == r[0]).any())
    labels[row[2]][labels[row[2]] == row[0]] = 0
    fixed = lineage_for_labels(labels, lin)
    got = {int(r[0]): tuple(int(v) for v in r[1:]) for r in fixed}
    assert got[int(row[0])][1] == row[2] - 1
    assert {int(r[0]): int(r[3]) for r in fixed if r[3]} == \
           {int(r[0]): int(r[3]) for r in lin if r[3]}


def test_reader_declines_what_it_cannot_open(tmp_path):
    single = tmp_path / "one.tif"
    tifffile.imwrite(single, np.zeros((32, 32), np.uint16))
    (tmp_path / "notes.txt").write_text("x")
    assert napari_get_reader(str(single)) is None  # left to napari's own readers
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    assert napari_get_reader(str(tmp_path / "missing.tif")) is None


def test_reader_movie_tiff_and_folder(tmp_path, small):
    stack = tmp_path / "movie.tif"
    tifffile.imwrite(stack, small.images)
    folder = write_movie_folder(tmp_path / "01", small.images)
    for path in (stack, folder):
        reader = napari_get_reader(str(path))
        assert reader is not None, path
        [(data, meta, kind)] = reader(str(path))
        assert kind == "image" and data.shape == small.images.shape
        np.testing.assert_array_equal(np.asarray(data[3]), small.images[3])
        lo, hi = meta["contrast_limits"]
        assert small.images.min() <= lo < hi <= small.images.max()


def test_reader_refuses_nan_in_the_first_frame_napari_shows(tmp_path, small):
    from napari_cosine_tracker.core.io import MovieError
    from napari_cosine_tracker.plugin.layers import contrast_limits

    images = small.images.astype(np.float32)  # 8 frames: napari first shows frame 3
    shown = (len(images) - 1) // 2
    images[shown, 5, 5] = np.nan
    stack = tmp_path / "nan.tif"
    tifffile.imwrite(stack, images)
    reader = napari_get_reader(str(stack))  # headers only: accepted
    with pytest.raises(MovieError, match=rf"nan\.tif: frame {shown} contains NaN"):
        reader(str(stack))
    with pytest.raises(MovieError, match=rf"cells: frame {shown} contains NaN.*nan_to_num"):
        contrast_limits(images, name="cells")
    images[shown] = 0
    images[1, 5, 5] = np.inf  # a frame not sampled: found when shown or tracked
    lo, hi = contrast_limits(images)
    assert np.isfinite([lo, hi]).all() and lo < hi


def test_reader_ctc_result_and_tra_folder(tmp_path, small):
    res = write_ctc_result(tmp_path / "01_RES", small.labels, small.lineage)
    layers = read_path(str(res))
    kinds = [k for _, _, k in layers]
    assert kinds == ["labels", "tracks"]
    (labels, lmeta, _), (tracks, tmeta, _) = layers
    np.testing.assert_array_equal(labels, small.labels)
    np.testing.assert_array_equal(lmeta["metadata"][LINEAGE_KEY], small.lineage)
    assert tmeta["graph"] == {int(r[0]): [int(r[3])] for r in small.lineage if r[3]}
    # labels and tracks share one colormap, so a track has its cell's colour
    assert lmeta["colormap"] is tmeta["colormaps_dict"]["track_id"]

    tra = tmp_path / "01_GT" / "TRA"
    tra.mkdir(parents=True)
    for t, f in enumerate(small.labels):
        tifffile.imwrite(tra / f"man_track{t:03d}.tif", f)
    (tra / "man_track.txt").write_text(
        "".join(" ".join(map(str, r)) + "\n" for r in small.lineage.tolist()))
    layers = read_path(str(tra))
    np.testing.assert_array_equal(layers[0][0], small.labels)


def test_viewer_open_save_roundtrip(make_napari_viewer, tmp_path, small):
    """File > Open a result folder, then File > Save the labels: same masks and lineage."""
    res = write_ctc_result(tmp_path / "01_RES", small.labels, small.lineage)
    viewer = make_napari_viewer()
    layers = viewer.open(str(res), plugin=PLUGIN)
    assert [type(x).__name__ for x in layers] == ["Labels", "Tracks"]
    lab, tracks = layers
    # colours match: the first point of each track has its mask's colour
    ids = tracks.data[:, 0].astype(int)
    np.testing.assert_allclose(tracks.track_colors[0], lab.get_color(ids[0]), atol=1e-6)

    out = tmp_path / "saved_RES"
    napari.save_layers(str(out), [lab], plugin=PLUGIN)
    labels2, lin2 = read_ctc_result(out)
    np.testing.assert_array_equal(np.asarray(labels2), small.labels)
    np.testing.assert_array_equal(lin2, small.lineage)

    # labels + tracks together: the division graph comes from the Tracks layer
    lab.metadata.pop(LINEAGE_KEY)
    out2 = tmp_path / "saved2_RES"
    napari.save_layers(str(out2), [lab, tracks], plugin=PLUGIN)
    _, lin3 = read_ctc_result(out2)
    np.testing.assert_array_equal(lin3, small.lineage)


def test_viewer_opens_movie_lazily(make_napari_viewer, tmp_path, small):
    folder = write_movie_folder(tmp_path / "02", small.images)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(folder), plugin=PLUGIN)
    assert layer.data.shape == small.images.shape
    assert type(layer.data).__name__ != "ndarray"  # frames read on demand


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_movie")
    [img] = viewer.layers
    assert img.data.ndim == 3 and img.data.shape[0] == 30 and img.data.max() > 0
    viewer.layers.clear()
    viewer.open_sample(PLUGIN, "synthetic_movie_truth")
    assert [type(x).__name__ for x in viewer.layers] == ["Image", "Labels", "Tracks"]
    assert viewer.layers[2].graph, "true tracks include divisions"


def test_reader_ctc_ground_truth_seg_folder(tmp_path, small):
    """SEG annotations cover some frames: they land at their frame numbers in a Labels layer."""
    from napari_cosine_tracker.core.io import write_ctc_gt

    gt = write_ctc_gt(tmp_path / "01_GT", small.labels, small.lineage, seg_frames=[1, 4])
    reader = napari_get_reader(str(gt / "SEG"))
    assert reader is not None
    [(labels, meta, kind)] = reader(str(gt / "SEG"))
    assert kind == "labels" and labels.shape == small.labels.shape  # length from TRA
    assert meta["metadata"]["annotated_frames"] == [1, 4]
    assert not labels[0].any() and labels[1].any() and labels[4].any()


def test_tracks_layers_carry_measurements_as_features():
    from napari.layers import Tracks

    from napari_cosine_tracker.plugin.layers import result_layer_data

    lab = np.zeros((4, 20, 20), np.uint16)
    lab[0:2, 2:5, 2:5] = 1
    lab[2:4, 2:5, 2:5] = 2
    lab[2, 10:13, 2:5] = 3
    lab[3, 12:15, 2:5] = 3  # 2 px in one frame
    lin = np.array([[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]])
    (_, _, _), (data, kwargs, kind) = result_layer_data(lab, lin)
    layer = Tracks(data, **kwargs)
    assert {"speed", "track_duration", "generation"} <= set(layer.features.columns)
    speeds = layer.features["speed"].to_numpy()
    assert np.isnan(speeds[data[:, 0] == 3][0]) and speeds[data[:, 0] == 3][1] == 2.0
    assert layer.features["generation"].tolist() == [0, 0, 1, 1, 1, 1]
    assert (layer.features["track_duration"] == 2).all()
    assert len(layer.features) == len(data)
