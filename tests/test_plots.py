"""Summary plots: the figure's numbers, saving PNG/SVG, the CLI, and the napari dock."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cosine_tracker.core.cli import main
from napari_cosine_tracker.core.io import write_ctc_result
from napari_cosine_tracker.core.measure import Calibration
from napari_cosine_tracker.core.plots import save_figure, summary_figure


@pytest.fixture(scope="module")
def movie(dividing_movie):
    return dividing_movie


def test_figure_shows_the_result_in_physical_units(movie, tmp_path):
    fig = summary_figure(movie.labels, movie.lineage, Calibration.of(0.5, 10.0), title="x")
    count, durations, speeds, divisions = fig.axes
    x, y = count.lines[0].get_data()
    assert list(x) == [t * 10.0 for t in range(12)]
    assert list(y) == [len(np.unique(f)) - 1 for f in movie.labels]
    assert "min" in count.get_xlabel() and "µm/min" in speeds.get_xlabel()
    n_div = len(set(movie.lineage[movie.lineage[:, 3] > 0, 3].tolist()))
    assert sum(p.get_height() for p in divisions.patches) == n_div
    assert sum(p.get_height() for p in durations.patches) == len(movie.lineage)
    for suffix in (".png", ".svg"):
        out = save_figure(fig, tmp_path / f"s{suffix}")
        head = out.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in out.read_bytes()[:2000]
    with pytest.raises(FileExistsError):
        save_figure(fig, tmp_path / "s.png")
    with pytest.raises(ValueError, match="suffix"):
        save_figure(fig, tmp_path / "s.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png", "s.svg"]  # no temp files


def test_cli_plot(movie, tmp_path, capsys):
    res = write_ctc_result(tmp_path / "01_RES", movie.labels, movie.lineage)
    assert main(["plot", str(res), "-o", str(tmp_path / "p.svg"), "--frame-interval", "5"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "p.svg").stat().st_size > 1000
    assert main(["plot", str(tmp_path / "nope"), "-o", str(tmp_path / "q.png")]) == 2


@pytest.mark.gui
def test_plots_dock_follows_the_layer_and_saves(movie, make_napari_viewer, qtbot, tmp_path):
    from napari_cosine_tracker.plugin.layers import result_layer_data
    from napari_cosine_tracker.plugin.plots_widget import PlotsWidget

    viewer = make_napari_viewer()
    (labels, meta, _), _ = result_layer_data(movie.labels, movie.lineage, name="sample")
    layer = viewer.add_labels(labels, scale=(5.0, 0.5, 0.5), **meta)
    widget = PlotsWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.layer is layer
    assert tuple(viewer.dims.axis_labels) == ("time", "y", "x")  # not napari's "-3"
    assert widget.calibration().frame_interval == 5.0
    assert f"{len(movie.lineage)} tracks" in widget.info.text()
    _, y = widget.figure.axes[0].lines[0].get_data()
    assert y[0] == len(np.unique(movie.labels[0])) - 1
    # deleting a track's cell in frame 0 redraws (after the edit burst)
    tid = int(np.unique(movie.labels[0])[1])
    data = layer.data.copy()
    data[0][data[0] == tid] = 0
    layer.data = data
    qtbot.waitUntil(lambda: widget.figure.axes[0].lines[0].get_data()[1][0] == y[0] - 1,
                    timeout=5000)
    widget.save(tmp_path / "plots.png")
    assert (tmp_path / "plots.png").read_bytes().startswith(b"\x89PNG")
