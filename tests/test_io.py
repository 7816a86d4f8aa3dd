"""Movie reading (lazy, checked) and CTC folders (atomic writes, round trips, slicing)."""

import os
import warnings

import numpy as np
import pytest
import tifffile

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.io import MovieError


def _frames(tmp_path, n=4, shape=(20, 24), prefix="t", digits=3, dtype=np.uint16):
    folder = tmp_path / "movie"
    folder.mkdir()
    rng = np.random.default_rng(0)
    data = rng.integers(0, 1000, (n,) + shape).astype(dtype)
    for t in range(n):
        tifffile.imwrite(folder / f"{prefix}{t:0{digits}d}.tif", data[t])
    return folder, data


# -- reading movies --------------------------------------------------------------------------


@pytest.mark.parametrize("prefix,digits", [("t", 3), ("t", 4), ("frame_", 1), ("img-", 2)])
def test_read_folder(tmp_path, prefix, digits):
    folder, data = _frames(tmp_path, n=12, prefix=prefix, digits=digits)
    m = io.read_movie(folder)
    assert m.shape == (12, 20, 24) and m.dtype == np.uint16 and len(m) == 12
    np.testing.assert_array_equal(m[10], data[10])  # natural sort: 10 after 9, not after 1
    np.testing.assert_array_equal(np.asarray(m), data)
    np.testing.assert_array_equal(m[-1], data[-1])
    np.testing.assert_array_equal(m[2:5, 3:7], data[2:5, 3:7])
    np.testing.assert_array_equal(m[..., 1], data[..., 1])
    assert m.path == folder and m.ndim == 3


def test_read_multipage_and_compressed(tmp_path):
    data = np.arange(5 * 16 * 18, dtype=np.uint16).reshape(5, 16, 18)
    for kw in ({}, {"compression": "zlib"}, {"imagej": True}):
        p = tmp_path / f"stack{len(kw)}{kw.get('compression', '')}.tif"
        tifffile.imwrite(p, data, **kw)
        m = io.read_movie(p)
        assert m.shape == data.shape
        np.testing.assert_array_equal(m[3], data[3])
        np.testing.assert_array_equal(np.asarray(m), data)


def test_lazy_reading(tmp_path, monkeypatch):
    """Opening reads headers only; frame t reads one file."""
    folder, data = _frames(tmp_path, n=6)
    reads = []
    real = tifffile.memmap
    monkeypatch.setattr(tifffile, "memmap", lambda p, *a, **k: reads.append(p) or real(p, *a, **k))
    m = io.read_movie(folder)
    assert reads == []
    np.testing.assert_array_equal(m[4], data[4])
    assert [os.path.basename(p) for p in reads] == ["t004.tif"]


def test_lazy_multipage(tmp_path, monkeypatch):
    data = np.arange(6 * 8 * 8, dtype=np.uint16).reshape(6, 8, 8)
    p = tmp_path / "s.tif"
    tifffile.imwrite(p, data, compression="zlib")  # not memory-mappable: reads pages
    called = []
    real = tifffile.TiffFile.asarray

    def spy(self, *a, **k):
        called.append(k.get("key"))
        return real(self, *a, **k)

    monkeypatch.setattr(tifffile.TiffFile, "asarray", spy)
    m = io.read_movie(p)
    np.testing.assert_array_equal(m[2], data[2])
    assert called == [2]


def test_as_movie(tmp_path):
    a = np.zeros((3, 10, 12), np.float32)
    m = io.as_movie(a)
    assert m.shape == (3, 10, 12) and m.dtype == np.float32
    assert io.as_movie(m) is m
    assert io.as_movie([[[1, 2]], [[3, 4]]]).shape == (2, 1, 2)


# -- bad input: each names the file and the problem ------------------------------------------


def _expect(path_or_call, *fragments):
    with pytest.raises(MovieError) as e:
        if callable(path_or_call):
            path_or_call()
        else:
            io.read_movie(path_or_call)
    msg = str(e.value)
    for f in fragments:
        assert f.lower() in msg.lower(), msg
    return msg


def test_missing_path(tmp_path):
    _expect(tmp_path / "nope", "nope", "no such file")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _expect(tmp_path / "empty", "empty", "no tiff files")


def test_ctc_root_hint(tmp_path):
    (tmp_path / "seq" / "01").mkdir(parents=True)
    _expect(tmp_path / "seq", "sub-folders 01")


def test_rgb_frames(tmp_path):
    d = tmp_path / "rgb"
    d.mkdir()
    for t in range(2):
        tifffile.imwrite(d / f"t{t:03d}.tif", np.zeros((16, 16, 3), np.uint8), photometric="rgb")
    msg = _expect(d, "t000.tif", "rgb", "grayscale")
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.zeros((4, 16, 16, 3), np.uint8), photometric="rgb")
    _expect(p, "rgb.tif", "rgb")
    assert "t000.tif" in msg


def test_zcyx_volume(tmp_path):
    p = tmp_path / "zcyx.tif"
    tifffile.imwrite(p, np.zeros((3, 2, 16, 16), np.uint16), metadata={"axes": "ZCYX"})
    _expect(p, "zcyx.tif", "channel")
    p2 = tmp_path / "tzyx.tif"
    tifffile.imwrite(p2, np.zeros((3, 5, 16, 16), np.uint16), metadata={"axes": "TZYX"})
    _expect(p2, "tzyx.tif", "3D volumes")
    d = tmp_path / "vol"
    d.mkdir()
    for t in range(2):
        tifffile.imwrite(d / f"t{t:03d}.tif", np.zeros((5, 16, 16), np.uint16),
                         metadata={"axes": "ZYX"})
    _expect(d, "t000.tif", "3D volumes", "one 2-D frame per file")


def test_multichannel_array():
    _expect(lambda: io.as_movie(np.zeros((3, 2, 16, 16))), "4-D", "channel")
    _expect(lambda: io.as_movie(np.zeros((3, 16, 16, 3))), "rgb")


def test_single_2d_image(tmp_path):
    p = tmp_path / "one.tif"
    tifffile.imwrite(p, np.zeros((16, 16), np.uint16))
    _expect(p, "one.tif", "single 2-D image", "movie")
    d = tmp_path / "onefolder"
    d.mkdir()
    tifffile.imwrite(d / "t000.tif", np.zeros((16, 16), np.uint16))
    _expect(d, "single 2-D image")
    _expect(lambda: io.as_movie(np.zeros((16, 16))), "single 2-D image")


def test_nan_inf_checked_on_read(tmp_path):
    data = np.ones((3, 8, 8), np.float32)
    data[1, 2, 2] = np.nan
    data[2, 0, 0] = np.inf
    p = tmp_path / "nan.tif"
    tifffile.imwrite(p, data, photometric="minisblack")  # 3 planes would be taken as RGB
    m = io.read_movie(p)  # headers only: no error yet
    assert m[0].sum() == 64
    _expect(lambda: m[1], "nan.tif", "frame 1", "nan or inf")
    _expect(lambda: m[2], "frame 2", "nan or inf")
    _expect(lambda: io.as_movie(data)[1], "nan or inf", "nan_to_num")


def test_differing_shapes(tmp_path):
    folder, _ = _frames(tmp_path, n=3)
    tifffile.imwrite(folder / "t003.tif", np.zeros((21, 24), np.uint16))
    _expect(folder, "t003.tif", "(21, 24)", "one size")


def test_differing_dtypes(tmp_path):
    folder, _ = _frames(tmp_path, n=3)
    tifffile.imwrite(folder / "t003.tif", np.zeros((20, 24), np.uint8))
    _expect(folder, "t003.tif", "uint8", "pixel type")


def test_truncated_file(tmp_path):
    folder, _ = _frames(tmp_path, n=3, shape=(64, 64))
    p = folder / "t001.tif"
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    _expect(folder, "t001.tif", "truncated")
    q = tmp_path / "cut.tif"
    tifffile.imwrite(q, np.zeros((4, 64, 64), np.uint16))
    q.write_bytes(q.read_bytes()[:5000])
    _expect(q, "cut.tif", "truncated")


def test_header_cut(tmp_path):
    folder, _ = _frames(tmp_path, n=3)
    p = folder / "t002.tif"
    p.write_bytes(p.read_bytes()[:6])
    _expect(folder, "t002.tif", "not a readable tiff")


def test_non_tiff(tmp_path):
    folder, _ = _frames(tmp_path, n=2)
    (folder / "t002.tif").write_text("this is not an image")
    _expect(folder, "t002.tif", "not a readable tiff")
    png = tmp_path / "movie.png"
    png.write_bytes(b"\x89PNG\r\n")
    _expect(png, "movie.png", "not a tiff")


def test_mixed_series_and_unnumbered(tmp_path):
    folder, _ = _frames(tmp_path, n=2)
    tifffile.imwrite(folder / "mask000.tif", np.zeros((20, 24), np.uint16))
    _expect(folder, "several numbered series", "'mask<n>.tif'")
    d = tmp_path / "nonum"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", np.zeros((4, 4), np.uint16))
    tifffile.imwrite(d / "b.tif", np.zeros((4, 4), np.uint16))
    _expect(d, "no frame number")


def test_unsupported_dtype():
    _expect(lambda: io.as_movie(np.zeros((2, 4, 4), complex)), "pixel type")


# -- lineage ---------------------------------------------------------------------------------


def test_lineage_round_trip(tmp_path):
    lin = np.array([[1, 0, 4, 0], [2, 5, 9, 1], [3, 5, 7, 1]], np.int64)
    p = io.write_lineage(tmp_path / "res_track.txt", lin)
    assert p.read_text() == "1 0 4 0\n2 5 9 1\n3 5 7 1\n"
    got = io.read_lineage(p)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, lin)
    (tmp_path / "tabs.txt").write_text("1\t0\t4\t0\n\n2 5  9 1\n")
    np.testing.assert_array_equal(io.read_lineage(tmp_path / "tabs.txt"), lin[:2])


@pytest.mark.parametrize("text,fragments", [
    ("1 0 4 0\n2 5 x 1\n", ["line 2", "'2 5 x 1'", "L B E P"]),
    ("1 0 4\n", ["line 1", "'1 0 4'"]),
    ("1 0 4 0 7\n", ["line 1"]),
    ("1 5 4 0\n", ["line 1", "ends"]),
    ("1 0 4 -1\n", ["line 1", "negative"]),
    ("1 0 4 0\n1 5 6 0\n", ["more than one line"]),
])
def test_malformed_lineage(tmp_path, text, fragments):
    p = tmp_path / "man_track.txt"
    p.write_text(text)
    msg = _expect(lambda: io.read_lineage(p), *fragments)
    assert "man_track.txt" in msg


def test_missing_lineage(tmp_path):
    _expect(lambda: io.read_lineage(tmp_path / "res_track.txt"), "res_track.txt", "not found")


def test_lineage_from_labels(synthetic_movie):
    m = synthetic_movie
    parents = {int(r[0]): int(r[3]) for r in m.lineage if r[3]}
    np.testing.assert_array_equal(io.lineage_from_labels(m.labels, parents), m.lineage)
    gap = np.zeros((3, 4, 4), np.uint16)
    gap[0, 0, 0] = gap[2, 0, 0] = 5
    _expect(lambda: io.lineage_from_labels(gap), "[5]", "come back", "new label")
    # the editor's reading: one row over the gap (TrackEditor(repair=True) splits it)
    np.testing.assert_array_equal(io.lineage_from_labels(gap, gaps="span"), [[5, 0, 2, 0]])
    from napari_cosine_tracker.core.edit import TrackEditor, lineage_from_labels

    assert lineage_from_labels is io.lineage_from_labels  # one home
    ed = TrackEditor(gap, repair=True)
    assert ed.check() == [] and len(ed.lineage) == 2


# -- CTC results -----------------------------------------------------------------------------


def test_result_round_trip_and_official_validation(tmp_path, synthetic_movie):
    from ctc_metrics import validate_sequence

    m = synthetic_movie
    out = io.write_ctc_result(tmp_path / "01_RES", m.labels, m.lineage)
    names = sorted(p.name for p in out.iterdir())
    assert names[0] == "mask000.tif" and names[-1] == "res_track.txt" and len(names) == 31
    masks, lineage = io.read_ctc_result(out)
    assert masks.dtype == np.uint16 and masks.shape == m.labels.shape
    np.testing.assert_array_equal(np.asarray(masks), m.labels)
    np.testing.assert_array_equal(lineage, m.lineage)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert validate_sequence(str(out), threads=1)["Valid"] == 1
    # No temporary or backup folders left next to it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]


def test_result_from_frame_sequence(tmp_path, synthetic_movie):
    """Labels given one frame at a time (a generator-backed sequence) and lineage derived."""
    m = synthetic_movie
    seen = []

    class Frames:
        def __len__(self):
            return 5

        def __getitem__(self, t):
            seen.append(t)
            return m.labels[t].astype(np.int32)

    parents = {int(r[0]): int(r[3]) for r in m.lineage if r[3] and r[1] < 5}
    out = io.write_ctc_result(tmp_path / "res", Frames(), parents=parents)
    assert seen == [0, 1, 2, 3, 4]
    masks, lin = io.read_ctc_result(out)
    assert masks.dtype == np.uint16 and len(masks) == 5
    np.testing.assert_array_equal(lin, io.lineage_from_labels(m.labels[:5], parents))


def test_four_digits_when_long(tmp_path):
    labels = [np.ones((2, 2), np.uint16)] * 1001
    out = io.write_ctc_result(tmp_path / "res", labels, np.array([[1, 0, 1000, 0]]))
    assert (out / "mask0000.tif").exists() and (out / "mask1000.tif").exists()
    assert len(io.read_ctc_result(out)[0]) == 1001


@pytest.mark.parametrize("lineage,fragment", [
    ([[1, 0, 1, 0]], "label 2 is in frame(s) 1 but has no lineage row"),
    ([[1, 0, 2, 0], [2, 1, 1, 0]], "track 1 (frames 0..2) is missing from frame(s) 2"),
    ([[1, 0, 1, 0], [2, 1, 1, 1]], "parent 1 ends at frame 1, not before its daughter 2"),
    ([[1, 0, 1, 0], [2, 1, 1, 7]], "parent 7, which has no row"),
    ([[1, 0, 0, 0], [2, 1, 1, 0]], "label 1 is in frame(s) 1 outside its row's frames 0..0"),
])
def test_result_lineage_checked(tmp_path, lineage, fragment):
    labels = np.zeros((2, 4, 4), np.uint16)
    labels[:, 0, 0] = 1
    labels[1, 3, 3] = 2
    _expect(lambda: io.write_ctc_result(tmp_path / "res", labels, np.array(lineage)),
            fragment, "nothing was written")
    assert not (tmp_path / "res").exists() and list(tmp_path.iterdir()) == []


def test_bad_label_values(tmp_path):
    _expect(lambda: io.write_ctc_result(tmp_path / "r", np.full((2, 2, 2), 70000)), "0..65535")
    _expect(lambda: io.write_ctc_result(tmp_path / "r", np.full((2, 2, 2), 0.5)), "integer")
    _expect(lambda: io.write_ctc_result(tmp_path / "r", np.zeros((2, 2, 2, 2), int)), "2-D")


def test_atomic_overwrite_survives_failure(tmp_path, synthetic_movie, monkeypatch):
    m = synthetic_movie
    out = io.write_ctc_result(tmp_path / "01_RES", m.labels[:6], io.lineage_from_labels(
        m.labels[:6]))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from napari_cosine_tracker.core.io import results as writer  # where the frames are written

    real = writer._write_tif
    calls = []

    def failing(path, frame):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        real(path, frame)

    monkeypatch.setattr(writer, "_write_tif", failing)
    with pytest.raises(OSError, match="simulated"):
        io.write_ctc_result(out, m.labels[6:12], io.lineage_from_labels(m.labels[6:12]))
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]  # temp folder removed
    # Interrupted between the two renames: the old folder is put back.
    monkeypatch.setattr(writer, "_write_tif", real)
    real_replace = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        io.write_ctc_result(out, m.labels[6:12], io.lineage_from_labels(m.labels[6:12]))
    monkeypatch.setattr(os, "replace", real_replace)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # And a successful overwrite replaces everything (no stale masks left).
    io.write_ctc_result(out, m.labels[:3], io.lineage_from_labels(m.labels[:3]))
    assert len(list(out.glob("mask*.tif"))) == 3


def test_refuses_to_replace_foreign_folder(tmp_path):
    d = tmp_path / "mydata"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    _expect(lambda: io.write_ctc_result(d, np.ones((2, 2, 2), np.uint16)), "notes.txt",
            "new or empty folder")
    assert (d / "notes.txt").read_text() == "precious"


# -- ground truth, slicing -------------------------------------------------------------------


def test_gt_write_read_and_slice(tmp_path, synthetic_movie):
    m = synthetic_movie
    gt_dir = io.write_ctc_gt(tmp_path / "01_GT", m.labels, m.lineage, seg_frames=[2, 5, 11])
    io.write_movie_folder(tmp_path / "01", m.images)
    gt = io.read_ctc_gt(gt_dir)
    assert sorted(gt.seg) == [2, 5, 11] and len(gt) == 30
    np.testing.assert_array_equal(gt.read_seg(5), m.labels[5])
    np.testing.assert_array_equal(gt.lineage, m.lineage)
    with pytest.raises(KeyError, match="no SEG truth for frame 3"):
        gt.read_seg(3)

    img, gt2 = io.slice_ctc_sequence(tmp_path / "01", 4, 12, tmp_path / "cut")
    mov = io.read_movie(img)
    np.testing.assert_array_equal(np.asarray(mov), m.images[4:12])
    g = io.read_ctc_gt(gt2)
    assert sorted(g.seg) == [1, 7]  # frames 5 and 11, renumbered
    np.testing.assert_array_equal(np.asarray(g.tra), m.labels[4:12])
    # The clipped lineage matches the labels of the window, parents outside dropped.
    expect = io.lineage_from_labels(m.labels[4:12], {
        int(c): int(p) for c, _, _, p in io.clip_lineage(m.lineage, 4, 12) if p})
    np.testing.assert_array_equal(g.lineage, expect)
    assert io.check_lineage(g.lineage, {t: np.unique(m.labels[4 + t])[1:] for t in range(8)}) == []
    _expect(lambda: io.slice_ctc_gt(gt_dir, 10, 40, tmp_path / "x"), "window 10:40")


def test_clip_lineage():
    lin = np.array([[1, 0, 4, 0], [2, 5, 9, 1], [3, 5, 7, 1], [4, 8, 9, 3], [5, 0, 1, 0]])
    got = io.clip_lineage(lin, 5, 9)
    np.testing.assert_array_equal(got, [[2, 0, 3, 0], [3, 0, 2, 0], [4, 3, 3, 3]])


def test_gt_errors(tmp_path):
    _expect(lambda: io.read_ctc_gt(tmp_path / "nope"), "ground-truth folder not found")
    (tmp_path / "g").mkdir()
    _expect(lambda: io.read_ctc_gt(tmp_path / "g"), "has no TRA/")
    (tmp_path / "g" / "TRA").mkdir()
    _expect(lambda: io.read_ctc_gt(tmp_path / "g"), "man_track.txt", "not found")


@pytest.mark.shared_data
def test_shared_data_reads(shared_data):
    for name, n, shape, dtype, nseg in [("Fluo-N2DH-SIM+", 65, (690, 628), np.uint16, 65),
                                         ("Fluo-N2DH-GOWT1", 92, (1024, 1024), np.uint8, 30)]:
        seq = shared_data / "ctc" / name
        m = io.read_movie(seq / "01")
        assert m.shape == (n,) + shape and m.dtype == dtype
        assert m[n - 1].shape == shape
        gt = io.read_ctc_gt(seq / "01_GT")
        assert len(gt) == n and len(gt.seg) == nseg and gt.lineage.shape[1] == 4
        first = next(iter(gt.seg))
        assert gt.read_seg(first).shape == shape
