"""Export: CSV against regionprops, GEFF read back with the geff package, CTC -> GEFF/CSV."""

from __future__ import annotations

import csv
import os

import geff
import numpy as np
import pytest
from skimage.measure import regionprops

from napari_cosine_tracker.core.export import (
    cell_table,
    export,
    export_csv,
    export_geff,
    export_result,
)
from napari_cosine_tracker.core.io import write_ctc_result


@pytest.fixture(scope="module")
def movie(dividing_movie):
    return dividing_movie


def expected_graph(labels, lineage):
    """Nodes (track, frame) and edges between them, straight from labels + lineage."""
    nodes = {(int(i), t) for t in range(len(labels)) for i in np.unique(labels[t]) if i}
    edges = set()
    for i, f, l, p in lineage.tolist():
        edges.update(((i, t), (i, t + 1)) for t in range(f, l))
        if p:
            pl = int(lineage[lineage[:, 0] == p][0, 2])
            edges.add(((p, pl), (i, f)))
    return nodes, edges


def graph_from_geff(path):
    from napari_cosine_tracker.core.geffio import find_geff

    g, meta = geff.read(str(find_geff(path)))
    key = {n: (int(d["track_id"]), int(d["t"])) for n, d in g.nodes(data=True)}
    return g, meta, set(key.values()), {(key[a], key[b]) for a, b in g.edges()}


def test_csv_matches_regionprops(movie, tmp_path):
    out = export_csv(tmp_path / "cells.csv", movie.labels, movie.lineage)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "parent_id", "track_id", "parent_track_id", "frame", "y", "x",
                             "area", "speed", "track_duration", "generation"]
    by_id = {int(r["id"]): r for r in rows}
    assert sorted(by_id) == list(range(1, len(rows) + 1))  # unique, from 1
    for r in rows:  # a cell's predecessor is the same track a frame earlier, or its mother
        if r["parent_id"]:
            q = by_id[int(r["parent_id"])]
            assert int(q["frame"]) == int(r["frame"]) - 1
            assert q["track_id"] in (r["track_id"], r["parent_track_id"])
    parent = {int(r[0]): int(r[3]) for r in movie.lineage}
    got = {(int(r["track_id"]), int(r["frame"])): r for r in rows}
    n = 0
    for t in range(len(movie.labels)):
        for rp in regionprops(movie.labels[t]):
            r = got[(rp.label, t)]
            assert float(r["y"]) == pytest.approx(rp.centroid[0], abs=1e-6)
            assert float(r["x"]) == pytest.approx(rp.centroid[1], abs=1e-6)
            assert int(r["area"]) == rp.area
            assert int(r["parent_track_id"]) == parent[rp.label]
            n += 1
    assert n == len(rows)
    keys = [(int(r["track_id"]), int(r["frame"])) for r in rows]
    assert keys == sorted(keys)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_csv(out, movie.labels, movie.lineage)
    export_csv(out, movie.labels[:2], movie.lineage, overwrite=True)
    with open(out, newline="") as f:
        assert {int(r["frame"]) for r in csv.DictReader(f)} == {0, 1}
    assert os.listdir(tmp_path) == ["cells.csv"]


def test_geff_graph_and_metadata(movie, tmp_path):
    out = export_geff(tmp_path / "tracks.geff", movie.labels, movie.lineage,
                      pixel_size=(0.3, 0.25), frame_interval=5.0)
    geff.validate_structure(str(out / "tracks.geff"))
    g, meta, nodes, edges = graph_from_geff(out)
    assert (nodes, edges) == expected_graph(movie.labels, movie.lineage)
    assert g.is_directed()
    assert min(g.nodes) == 1  # ids from 1: funtracks reserves 0
    axes = {a.name: a for a in meta.axes}
    assert [a.name for a in meta.axes] == ["t", "y", "x"]
    assert (axes["t"].type, axes["t"].unit, axes["t"].scale, axes["t"].scaled_unit) == (
        "time", "frame", 5.0, "minute")
    assert (axes["y"].type, axes["y"].unit, axes["y"].scale, axes["y"].scaled_unit) == (
        "space", "pixel", 0.3, "micrometer")
    assert axes["x"].scale == 0.25
    assert meta.track_node_props == {"tracklet": "track_id", "lineage": "lineage_id"}
    assert meta.display_hints.display_horizontal == "x"
    assert meta.display_hints.display_time == "t"
    # lineage_id: the root of each cell's family
    parent = {int(r[0]): int(r[3]) for r in movie.lineage}

    def root(i):
        while parent[i]:
            i = parent[i]
        return i

    for _, d in g.nodes(data=True):
        assert d["lineage_id"] == root(d["track_id"]) and d["seg_id"] == d["track_id"]
        t, i = d["t"], d["track_id"]
        assert d["area"] == int((movie.labels[t] == i).sum())
    # a daughter's first node has the parent's last node as its only predecessor
    daughter = next(r for r in movie.lineage if r[3])
    n0 = next(n for n, d in g.nodes(data=True) if d["track_id"] == daughter[0] and d["t"] == daughter[1])
    (pred,) = g.predecessors(n0)
    assert g.nodes[pred]["track_id"] == daughter[3]


def test_ctc_to_geff_and_csv_roundtrip(movie, tmp_path):
    res = write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    out = export_result(res, "geff", tmp_path / "out.geff")
    _, meta, nodes, edges = graph_from_geff(out)
    assert (nodes, edges) == expected_graph(movie.labels, movie.lineage)
    assert meta.axes[1].unit == "pixel" and meta.axes[1].scale is None
    csv_out = export_result(res, "csv", tmp_path / "out.csv")
    with open(csv_out, newline="") as f:
        assert len(list(csv.DictReader(f))) == len(nodes)
    ctc_out = export_result(res, "ctc", tmp_path / "02_RES")
    assert sorted(p.name for p in ctc_out.iterdir()) == sorted(p.name for p in res.iterdir())


def test_geff_overwrite_and_crash_keep_the_old_store(movie, tmp_path, monkeypatch):
    out = export_geff(tmp_path / "t.geff", movie.labels, movie.lineage)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_geff(out, movie.labels, movie.lineage)

    def crash(store, *a, **k):
        os.makedirs(os.path.join(store, "nodes"), exist_ok=True)
        raise OSError("disk full")

    monkeypatch.setattr(geff.core_io, "write_arrays", crash)
    with pytest.raises(OSError, match="disk full"):
        export_geff(out, movie.labels[:3], movie.lineage, overwrite=True)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["t.geff"]  # nothing half-written left behind
    _, _, nodes, _ = graph_from_geff(out)
    assert nodes == expected_graph(movie.labels, movie.lineage)[0]

    # overwrite with a shorter movie replaces the store
    lab = movie.labels[:3]
    lin = movie.lineage[movie.lineage[:, 1] < 3].copy()
    lin[:, 2] = np.minimum(lin[:, 2], 2)
    export_geff(out, lab, lin, overwrite=True)
    _, _, nodes, edges = graph_from_geff(out)
    assert (nodes, edges) == expected_graph(lab, lin)
    assert sorted(os.listdir(tmp_path)) == ["t.geff"]


def test_bad_input(movie, tmp_path):
    with pytest.raises(ValueError, match="do not apply to the CTC"):
        export(movie.labels, movie.lineage, "ctc", tmp_path / "r", pixel_size=1.0)
    with pytest.raises(ValueError, match="format must be one of"):
        export(movie.labels, movie.lineage, "xlsx", tmp_path / "x")
    with pytest.raises(ValueError, match="no lineage row"):
        cell_table(movie.labels, movie.lineage[1:])
    with pytest.raises(FileNotFoundError, match="result folder not found"):
        export_result(tmp_path / "nope", "csv", tmp_path / "x.csv")
    with pytest.raises(ValueError, match=r"\(T, Y, X\)"):
        export_csv(tmp_path / "x.csv", movie.labels[0], movie.lineage)


def test_cli_export(movie, tmp_path, capsys):
    from napari_cosine_tracker.core.cli import main

    res = write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    out = tmp_path / "t.geff"
    assert main(["export", str(res), "--format", "geff", "-o", str(out),
                 "--pixel-size", "0.5", "--frame-interval", "10"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    _, meta, nodes, edges = graph_from_geff(out)
    assert (nodes, edges) == expected_graph(movie.labels, movie.lineage)
    assert meta.axes[0].scale == 10.0 and meta.axes[2].scale == 0.5
    assert main(["export", str(res), "--format", "geff", "-o", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert main(["export", str(res), "--format", "csv", "-o", str(tmp_path / "c.csv")]) == 0
    assert main(["export", str(res), "--format", "csv", "-o", str(tmp_path / "d.csv"),
                 "--pixel-size", "0.5", "--images", str(tmp_path / "movie.tif")]) == 2
    assert "movie.tif" in capsys.readouterr().err  # the missing movie is named
    import tifffile

    tifffile.imwrite(tmp_path / "movie.tif", movie.images)
    assert main(["export", str(res), "--format", "csv", "-o", str(tmp_path / "d.csv"),
                 "--pixel-size", "0.5", "--images", str(tmp_path / "movie.tif")]) == 0
    header = (tmp_path / "d.csv").read_text().splitlines()[0].split(",")
    assert {"mean_intensity", "y_um", "area_um2"} <= set(header)
    assert main(["export", str(res), "--format", "ctc", "-o", str(tmp_path / "e"),
                 "--pixel-size", "1"]) == 2
    assert "geff and csv" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--format", "csv", "-o", "x.csv"]) == 2


def test_csv_measurements_in_physical_units(movie, tmp_path):
    """Mean intensity as regionprops measures it, positions and areas in micrometres, speed
    per minute, each track's duration and generation."""
    import pandas as pd

    out = export_csv(tmp_path / "cells.csv", movie.labels, movie.lineage, images=movie.images,
                     pixel_size=0.5, frame_interval=10.0)
    df = pd.read_csv(out)
    assert {"mean_intensity", "speed", "time_min", "y_um", "x_um", "area_um2",
            "track_duration", "generation"} <= set(df.columns)
    got = df.set_index(["track_id", "frame"])
    for t in (0, len(movie.labels) - 1):
        for rp in regionprops(movie.labels[t], intensity_image=movie.images[t]):
            r = got.loc[(rp.label, t)]
            assert r["mean_intensity"] == pytest.approx(rp.intensity_mean, rel=1e-6)
            assert r["y_um"] == pytest.approx(rp.centroid[0] * 0.5)
            assert r["area_um2"] == pytest.approx(rp.area * 0.25)
            assert r["time_min"] == t * 10.0
    # speed: the step from the same track's previous cell, in um per minute
    tid = int(movie.lineage[0, 0])
    track = df[df.track_id == tid].sort_values("frame")
    step = np.hypot(np.diff(track.y), np.diff(track.x)) * 0.5 / 10.0
    assert np.isnan(track.speed.iloc[0])
    np.testing.assert_allclose(track.speed.iloc[1:], step, rtol=1e-5, atol=1e-6)
    row = movie.lineage[movie.lineage[:, 0] == tid][0]
    assert (track.track_duration == (row[2] - row[1] + 1) * 10.0).all()
    daughters = df[df.parent_track_id > 0]
    assert (daughters.generation >= 1).all() and (df[df.parent_track_id == 0].generation == 0).all()


def test_track_measurements():
    from napari_cosine_tracker.core.measure import Calibration, track_measurements

    lab = np.zeros((4, 20, 20), np.uint16)
    lab[0:2, 2:5, 2:5] = 1  # mother, frames 0-1, still
    lab[2:4, 2:5, 2:5] = 2  # daughters, frames 2-3
    lab[2, 10:13, 2:5] = 3
    lab[3, 12:15, 2:5] = 3  # moves 2 px in one frame
    lin = np.array([[1, 0, 1, 0], [2, 2, 3, 1], [3, 2, 3, 1]])
    m = track_measurements(lab, lin, Calibration.of(pixel_size=2.0, frame_interval=5.0))
    assert m["generation"].tolist() == [0, 1, 1]
    assert m["divides"].tolist() == [True, False, False]
    assert m["time_to_division"][0] == 10.0 and np.isnan(m["time_to_division"][1])
    assert m["duration"].tolist() == [10.0, 10.0, 10.0]
    assert m["displacement"][2] == pytest.approx(4.0) and m["mean_speed"][2] == pytest.approx(0.8)


def test_funtracks_reads_the_csv_as_a_graph_with_its_segmentation(movie, tmp_path):
    """The table import of funtracks (motile_tracker's data model) reads our CSV, with the
    CTC masks as its segmentation: every cell a node, every link an edge."""
    import pandas as pd
    from funtracks.import_export.csv._import import tracks_from_df

    from napari_cosine_tracker.core.export import FUNTRACKS_NODE_NAME_MAP

    out = export_csv(tmp_path / "cells.csv", movie.labels, movie.lineage, images=movie.images,
                     pixel_size=0.5, frame_interval=3.0)
    df = pd.read_csv(out)
    tracks = tracks_from_df(df, segmentation=np.asarray(movie.labels),
                            node_name_map=FUNTRACKS_NODE_NAME_MAP)
    nodes, edges = expected_graph(movie.labels, movie.lineage)
    assert tracks.graph.num_nodes() == len(nodes)
    assert tracks.graph.num_edges() == len(edges)
