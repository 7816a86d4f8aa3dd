"""GEFF both ways, tested against the real tools: geff's validator and CTC converter, funtracks
(motile_tracker's data model) reading our stores and writing its own, napari's reader."""

from __future__ import annotations

import shutil
import warnings

import geff
import numpy as np
import pytest
from funtracks.import_export import export_to_geff, import_from_geff
from geff.convert._ctc import from_ctc_to_geff

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.geffio import (
    GeffError,
    export_geff,
    find_geff,
    is_geff,
    read_geff,
)
from napari_cosine_tracker.core.io import read_ctc_result, write_ctc_result


@pytest.fixture(scope="module")
def movie(dividing_movie):
    return dividing_movie


def same_partition(a, b) -> bool:
    """Two label movies segment the same cells in every frame (ids may differ)."""
    for fa, fb in zip(a, b):
        pairs = np.unique(np.stack([fa.ravel(), fb.ravel()]), axis=1)
        if not (pairs.shape[1] == len(np.unique(fa)) == len(np.unique(fb))
                and ((pairs[0] == 0) == (pairs[1] == 0)).all()):
            return False
    return len(a) == len(b)


def test_our_store_is_valid_geff_with_its_segmentation_linked(movie, tmp_path):
    out = export_geff(tmp_path / "tracks.zarr", movie.labels, movie.lineage, pixel_size=0.4)
    graph = find_geff(out)
    assert graph == out / "tracks.geff" and is_geff(out) and is_geff(graph)
    geff.validate_structure(str(graph))
    _, meta = geff.read(str(graph))
    (obj,) = meta.related_objects
    assert (obj.type, obj.path, obj.node_prop) == ("labels", "../segmentation", "seg_id")
    assert meta.extra["tracksdata"] == {"shape": list(movie.labels.shape), "scale": [0.4, 0.4]}
    import zarr

    np.testing.assert_array_equal(zarr.open_array(str(out / "segmentation"))[:], movie.labels)


def test_funtracks_loads_our_store_with_segmentation_and_scale(movie, tmp_path):
    """funtracks opens our store with nothing but its path: the pixel size and every cell's
    mask come from the store itself (per-cell masks, as funtracks writes its own stores)."""
    out = export_geff(tmp_path / "tracks.zarr", movie.labels, movie.lineage, pixel_size=(0.5, 0.25))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracks = import_from_geff(find_geff(out))
    assert list(tracks.scale) == [1.0, 0.5, 0.25]
    n_cells = sum(len(np.unique(f)) - 1 for f in movie.labels)
    assert tracks.graph.num_nodes() == n_cells
    seg = np.asarray(tracks.segmentation)
    assert same_partition(seg, movie.labels)  # relabelled to node ids, same masks


def test_we_read_a_geff_whose_cells_carry_their_own_masks(movie, tmp_path):
    """A GEFF with per-cell masks and no labels array (funtracks' embedded segmentation)
    opens with its labels."""
    out = export_geff(tmp_path / "tracks.zarr", movie.labels, movie.lineage)
    shutil.rmtree(out / "segmentation")
    got = read_geff(out)
    np.testing.assert_array_equal(got.labels, movie.labels)
    np.testing.assert_array_equal(got.lineage, movie.lineage)


def test_ctc_to_geff_to_ctc_is_identical(movie, tmp_path, capsys):
    res = write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    assert main(["convert", str(res), str(tmp_path / "t.zarr"), "--pixel-size", "0.3"]) == 0
    assert main(["convert", str(tmp_path / "t.zarr"), str(tmp_path / "02_RES")]) == 0
    assert "wrote" in capsys.readouterr().out
    for a, b in zip(sorted(res.iterdir()), sorted((tmp_path / "02_RES").iterdir())):
        assert a.name == b.name
    labels_a, lin_a = read_ctc_result(res)
    labels_b, lin_b = read_ctc_result(tmp_path / "02_RES")
    np.testing.assert_array_equal(np.asarray(labels_a), np.asarray(labels_b))
    np.testing.assert_array_equal(lin_a, lin_b)
    assert (tmp_path / "01_RES" / "res_track.txt").read_text() == (
        tmp_path / "02_RES" / "res_track.txt").read_text()
    # an existing output is kept unless asked
    assert main(["convert", str(tmp_path / "t.zarr"), str(tmp_path / "02_RES")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "t.zarr"), str(tmp_path / "02_RES"), "--overwrite"]) == 0


def test_we_read_the_geff_of_geffs_own_ctc_converter(movie, tmp_path):
    ctc = tmp_path / "TRA"
    write_ctc_result(tmp_path / "RES", movie.labels, movie.lineage)
    ctc.mkdir()
    for f in (tmp_path / "RES").iterdir():  # the converter reads a ground-truth TRA folder
        name = "man_track.txt" if f.suffix == ".txt" else f.name.replace("mask", "man_track")
        shutil.copy(f, ctc / name)
    from_ctc_to_geff(ctc, tmp_path / "c.geff", segmentation_store=tmp_path / "c_seg.zarr")
    got = read_geff(tmp_path / "c.geff")
    np.testing.assert_array_equal(got.labels, movie.labels)
    np.testing.assert_array_equal(got.lineage, movie.lineage)
    assert got.pixel_size is None and got.merges == 0


def test_we_read_the_geff_funtracks_writes(movie, tmp_path):
    out = export_geff(tmp_path / "ours.zarr", movie.labels, movie.lineage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracks = import_from_geff(find_geff(out))
        export_to_geff(tracks, tmp_path / "funtracks.zarr")
    got = read_geff(tmp_path / "funtracks.zarr")
    assert got.labels is not None and same_partition(got.labels, movie.labels)
    assert len(got.lineage) == len(movie.lineage)
    assert (got.lineage[:, 3] > 0).sum() == (movie.lineage[:, 3] > 0).sum()  # same divisions
    # each of our tracks is one of theirs, frame for frame
    for tid, first, last, _ in movie.lineage:
        theirs = np.unique(got.labels[first:last + 1][movie.labels[first:last + 1] == tid])
        assert len(theirs) == 1


def test_graph_without_labels_merges_and_bad_stores(movie, tmp_path, capsys):
    out = export_geff(tmp_path / "g.zarr", movie.labels, movie.lineage, segmentation=False,
                      frame_interval=5.0)
    got = read_geff(out)
    assert got.labels is None and got.frame_interval == 5.0 and len(got.cells)
    assert main(["convert", str(out), str(tmp_path / "RES")]) == 2
    assert "links no segmentation" in capsys.readouterr().err

    # a merge: two cells of frame 0 both continue into one cell of frame 1
    node_ids = np.array([1, 2, 3])
    props = {"t": {"values": np.array([0, 0, 1]), "missing": None},
             "y": {"values": np.array([1.0, 5.0, 3.0]), "missing": None},
             "x": {"values": np.array([1.0, 5.0, 3.0]), "missing": None}}
    from geff_spec import Axis, GeffMetadata

    meta = GeffMetadata(directed=True, node_props_metadata={}, edge_props_metadata={},
                        axes=[Axis(name="t", type="time"), Axis(name="y", type="space"),
                              Axis(name="x", type="space")])
    geff.core_io.write_arrays(str(tmp_path / "m.geff"), node_ids, props,
                              np.array([[1, 3], [2, 3]]), None, meta)
    merged = read_geff(tmp_path / "m.geff")
    assert merged.merges == 1 and "merges" in merged.notes[0]
    assert sorted(merged.lineage[:, 3].tolist()) == [0, 0, 0]  # the merged cell: new track

    (tmp_path / "empty").mkdir()
    with pytest.raises(GeffError, match="not a GEFF store"):
        read_geff(tmp_path / "empty")
    assert not is_geff(tmp_path / "nowhere")


def test_napari_reader_opens_a_geff_as_labels_and_tracks(movie, tmp_path):
    from napari_cosine_tracker.plugin.reader import napari_get_reader

    out = export_geff(tmp_path / "t.zarr", movie.labels, movie.lineage, pixel_size=0.5,
                      frame_interval=3.0)
    reader = napari_get_reader(str(out))
    assert reader is not None
    layers = reader(str(out))
    kinds = [k for _, _, k in layers]
    assert kinds == ["labels", "tracks"]
    (labels, lmeta, _), (tracks, tmeta, _) = layers
    np.testing.assert_array_equal(labels, movie.labels)
    np.testing.assert_array_equal(lmeta["metadata"]["lineage"], movie.lineage)
    assert lmeta["scale"] == tmeta["scale"] == (3.0, 0.5, 0.5)
    assert set(np.unique(tracks[:, 0]).astype(int)) == set(movie.lineage[:, 0].tolist())
