"""Property-based fuzzing of the readers, the CTC writer/reader and the lineage structures.

Bounded (about 50 examples a property, no per-example deadline, an alarm against hangs) so
the whole file runs in well under 30 s; ``NCT_FUZZ_EXAMPLES=N`` gives a longer, randomised
run. A reader given junk must raise :class:`MovieError` (a ``ValueError``) naming the file --
never another exception, never hang; whatever it accepts must read back as it claims.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from napari_cosine_tracker.core import io
from napari_cosine_tracker.core.io import MovieError

# NCT_FUZZ_EXAMPLES=2000 runs a longer, randomised fuzz (e.g. nightly); the default is a
# fixed, reproducible sample for every test run.
_N = int(os.environ.get("NCT_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=_N, deadline=None, derandomize=_N <= 50,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@contextmanager
def no_hang(seconds: int = 10):
    """Fail (instead of hanging the suite) if the body runs longer than ``seconds``."""
    def alarm(*_):
        raise TimeoutError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="nct-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _valid_tiff_bytes(kind: str) -> bytes:
    d = Path(tempfile.mkdtemp(prefix="nct-tif-"))
    try:
        p = d / "m.tif"
        data = (np.arange(3 * 12 * 10) % 251).astype(np.uint16).reshape(3, 12, 10)
        if kind == "stack":
            tifffile.imwrite(p, data, photometric="minisblack")
        elif kind == "compressed":
            tifffile.imwrite(p, data, photometric="minisblack", compression="zlib")
        elif kind == "imagej":
            tifffile.imwrite(p, data.astype(np.uint8), imagej=True)
        else:  # one frame of a folder
            tifffile.imwrite(p, data[0])
        return p.read_bytes()
    finally:
        shutil.rmtree(d, ignore_errors=True)


VALID = {k: _valid_tiff_bytes(k) for k in ("stack", "compressed", "imagej", "frame")}


def _read_everything(path: Path):
    """read_movie and every frame: the reader's whole contract on one path."""
    with no_hang():
        try:
            movie = io.read_movie(path)
            frames = [movie[t] for t in range(len(movie))]
        except MovieError as e:
            assert str(path.name) in str(e) or str(path) in str(e), e
            return None
    assert all(f.shape == movie.shape[1:] and f.dtype == movie.dtype for f in frames)
    return movie


@FUZZ
@given(data=st.binary(max_size=600))
@example(data=b"II*\x00")
@example(data=b"MM\x00*\x00\x00\x00\x08")
@example(data=b"II+\x00\x08\x00\x00\x00")
def test_random_bytes_as_a_movie_file(workdir, data):
    p = workdir / "random.tif"
    p.write_bytes(data)
    _read_everything(p)


@FUZZ
@given(kind=st.sampled_from(sorted(VALID)),
       edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1,
                      max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10_000)))
def test_mutated_tiff_headers(workdir, kind, edits, cut):
    raw = bytearray(VALID[kind])
    head = min(len(raw), 400)  # IFDs and tags of these small files sit at the start or end
    for pos, value in edits:
        i = pos % head if pos % 2 else len(raw) - 1 - pos % head
        raw[i] = value
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    if kind == "frame":
        d = workdir / "folder"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        good = VALID["frame"]
        (d / "t000.tif").write_bytes(good)
        (d / "t001.tif").write_bytes(bytes(raw))
        (d / "t002.tif").write_bytes(good)
        _read_everything(d)
    else:
        p = workdir / f"{kind}.tif"
        p.write_bytes(bytes(raw))
        _read_everything(p)


# -- res_track.txt / man_track.txt --------------------------------------------------------------

def _check_lineage_array(lin):
    assert lin.dtype == np.int64 and lin.ndim == 2 and lin.shape[1] == 4
    if len(lin):
        assert (lin[:, 0] > 0).all() and (lin[:, 1:] >= 0).all()
        assert (lin[:, 2] >= lin[:, 1]).all()
        assert len(np.unique(lin[:, 0])) == len(lin)


@FUZZ
@given(data=st.binary(max_size=400))
def test_random_bytes_as_a_track_file(workdir, data):
    p = workdir / "res_track.txt"
    p.write_bytes(data)
    with no_hang():
        try:
            lin = io.read_lineage(p)
        except MovieError as e:
            assert "res_track.txt" in str(e)
            return
    _check_lineage_array(lin)


_token = st.one_of(st.integers(-3, 40).map(str), st.sampled_from(["", "x", "1.5", "-0", "+2",
                   "1e3", "٣", "\t", "0x1", "99999999999999999999999"]))


@FUZZ
@example(lines=["1 0 99999999999999999999999 0"])
@example(lines=["1 0 2 0", "2 3 4 1", "٣ 0 1 0"])
@given(lines=st.lists(st.lists(_token, min_size=0, max_size=6).map(" ".join), max_size=8))
def test_mutated_track_file_lines(workdir, lines):
    p = workdir / "man_track.txt"
    p.write_text("\n".join(lines), encoding="utf-8")
    with no_hang():
        try:
            lin = io.read_lineage(p)
        except MovieError as e:
            assert "man_track.txt" in str(e)
            return
    _check_lineage_array(lin)
    # What was accepted writes back to a file that reads the same.
    io.write_lineage(p, lin)
    np.testing.assert_array_equal(io.read_lineage(p), lin)


# -- lineage structures -----------------------------------------------------------------------

_rows = st.lists(st.tuples(st.integers(-2, 12), st.integers(-1, 8), st.integers(-1, 8),
                           st.integers(-1, 12)), max_size=10)


@FUZZ
@given(rows=_rows, n_frames=st.one_of(st.none(), st.integers(1, 9)))
def test_check_lineage_reports_instead_of_crashing(rows, n_frames):
    lin = np.array(rows, np.int64).reshape(-1, 4)
    problems = io.check_lineage(lin, n_frames=n_frames)
    assert all(isinstance(p, str) and p for p in problems)
    ok = (len(lin) == 0 or ((lin[:, 0] > 0).all() and (lin >= 0).all()
                            and (lin[:, 2] >= lin[:, 1]).all()
                            and len(np.unique(lin[:, 0])) == len(lin)))
    if not ok:
        assert problems  # every broken basic rule is reported


@st.composite
def valid_lineages(draw):
    """Random forests of tracks that satisfy the CTC rules (parents end before daughters)."""
    n = draw(st.integers(0, 8))
    rows = []
    for i in range(1, n + 1):
        parent = draw(st.sampled_from([0] + [r[0] for r in rows if r[2] < 8]))
        first = draw(st.integers(rows[parent - 1][2] + 1 if parent else 0, 9))
        last = draw(st.integers(first, 9))
        rows.append((i, first, last, parent))
    ids = draw(st.permutations(list(range(1, n + 1)))) if n else []
    remap = {0: 0, **{i + 1: ids[i] for i in range(n)}}
    return np.array([(remap[i], b, e, remap[p]) for i, b, e, p in rows], np.int64).reshape(-1, 4)


@FUZZ
@given(lin=valid_lineages(), window=st.tuples(st.integers(0, 9), st.integers(1, 10)))
def test_lineage_file_round_trip_and_clipping(workdir, lin, window):
    assert io.check_lineage(lin, n_frames=10) == []
    p = io.write_lineage(workdir / "lin.txt", lin)
    np.testing.assert_array_equal(io.read_lineage(p), lin)
    start, stop = min(window), max(window)
    assume(start < stop)
    clipped = io.clip_lineage(lin, start, stop)
    assert io.check_lineage(clipped, n_frames=stop - start) == []
    assert set(clipped[:, 0]) == {i for i, b, e, _ in lin.tolist() if e >= start and b < stop}


# -- CTC result folders -------------------------------------------------------------------------

@st.composite
def label_stacks(draw):
    T = draw(st.integers(1, 4))
    H, W = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    values = draw(st.lists(st.sampled_from([0, 0, 1, 2, 3, 7, 65535]), min_size=T * H * W,
                           max_size=T * H * W))
    return np.array(values, np.uint16).reshape(T, H, W)


@FUZZ
@given(labels=label_stacks(), parents=st.dictionaries(st.sampled_from([1, 2, 3, 7]),
                                                     st.sampled_from([1, 2, 3, 7]), max_size=2))
def test_ctc_result_round_trip(workdir, labels, parents):
    out = workdir / "01_RES"
    shutil.rmtree(out, ignore_errors=True)
    io.write_ctc_result(out, np.zeros((1, 1, 1), np.uint16))  # an old result to replace
    old = sorted(p.name for p in out.iterdir())
    with no_hang():
        try:
            io.write_ctc_result(out, labels, parents=parents)
        except MovieError:
            # Refused (a label with a gap, an impossible parent): the old result is intact.
            assert sorted(p.name for p in out.iterdir()) == old
            assert [p.name for p in workdir.iterdir() if p.name.startswith(".01_RES")] == []
            return
    back, lineage = io.read_ctc_result(out)
    np.testing.assert_array_equal(np.asarray(back), labels)
    np.testing.assert_array_equal(lineage, io.lineage_from_labels(labels, parents))
    presence = {t: io._labels_in(labels[t]) for t in range(len(labels))}
    assert io.check_lineage(lineage, presence, n_frames=len(labels)) == []


# -- editor projects ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project_bytes(workdir):
    from napari_cosine_tracker.core.edit import TrackEditor

    labels = np.zeros((3, 10, 10), np.uint16)
    labels[:, 2:6, 2:6] = 1
    labels[1:, 6:9, 6:9] = 2
    ed = TrackEditor(labels, io.lineage_from_labels(labels))
    ed.delete_cell(1, 1)
    ed.delete_cell(2, 2)
    ed.undo()
    folder = ed.save(workdir / "good.tracks")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@FUZZ
@given(member=st.sampled_from(["state", "base"]),
       edits=st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 255)), min_size=1,
                      max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 100_000)))
def test_mutated_project_files(workdir, project_bytes, member, edits, cut):
    """A damaged project opens as saved or is refused with a ValueError/FileNotFoundError."""
    from napari_cosine_tracker.core.edit import TrackEditor

    folder = workdir / "fuzz.tracks"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name, raw in project_bytes.items():
        if name.startswith(member):
            raw = bytearray(raw)
            for pos, value in edits:
                raw[pos % len(raw)] = value
            if cut is not None:
                raw = raw[: cut % (len(raw) + 1)]
        (folder / name).write_bytes(bytes(raw))
    with no_hang():
        try:
            ed = TrackEditor.open(folder)
        except (ValueError, FileNotFoundError) as e:
            assert str(folder) in str(e) or "project" in str(e), e
            return
    assert ed.check() == []
