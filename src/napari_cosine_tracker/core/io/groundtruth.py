"""CTC ground truth (SEG, TRA) read, and time windows cut out of a sequence (renumbered
from 0) so held-out frames can be scored."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import _guard_overwrite, _swap_in, _tmp_sibling
from .lineage import _as_lineage, _fmt_frames, read_lineage, write_lineage
from .movies import Movie, MovieError, _read_2d, _read_folder, _tiffs_in, read_movie
from .results import _GT_FILE, _frame_name, _write_tif

# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


@dataclass
class CTCGroundTruth:
    """A CTC ground-truth folder (``XX_GT``).

    Attributes
    ----------
    path : Path
        The folder.
    seg : dict of int -> Path
        Frame -> ``SEG/man_segTTT.tif``; may cover only some frames, and a SEG frame may
        annotate only some cells (GOWT1). Read one with :meth:`read_seg`.
    tra : Movie
        ``TRA/man_trackTTT.tif`` markers, one per frame, read lazily.
    lineage : ndarray, int64, (N, 4)
        ``TRA/man_track.txt``.
    """

    path: Path
    seg: dict = field(default_factory=dict)
    tra: Movie | None = None
    lineage: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    def __len__(self) -> int:
        return len(self.tra) if self.tra is not None else 0

    def read_seg(self, t: int) -> np.ndarray:
        """The segmentation truth of frame ``t`` (2-D), if that frame has one."""
        if t not in self.seg:
            raise KeyError(f"{self.path}: no SEG truth for frame {t}; frames with SEG: "
                           f"{_fmt_frames(self.seg)}")
        return _read_2d(self.seg[t])


def _seg_files(seg_dir: Path) -> dict[int, Path]:
    out = {}
    for p in _tiffs_in(seg_dir):
        m = re.match(r"^man_seg_?(\d+)(_\d+)?$", p.stem)  # 3-D GT has man_segTTT_ZZZ slices
        if m:
            out.setdefault(int(m.group(1)), p)
    return dict(sorted(out.items()))


def read_ctc_gt(gt_dir) -> CTCGroundTruth:
    """Read a CTC ground-truth folder (``01_GT``): SEG frames, TRA markers, lineage.

    Raises
    ------
    MovieError
        Missing folder, missing ``TRA`` or ``man_track.txt``, malformed track file.
    """
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise MovieError(f"{gt_dir}: ground-truth folder not found; pass the XX_GT folder of a "
                         "CTC sequence (it holds SEG/ and TRA/)")
    tra_dir = gt_dir / "TRA"
    if not tra_dir.is_dir():
        raise MovieError(f"{gt_dir}: has no TRA/ folder; a CTC ground-truth folder holds TRA/ "
                         "(man_trackTTT.tif + man_track.txt) and usually SEG/")
    lineage = read_lineage(tra_dir / "man_track.txt")
    tra = _read_folder(tra_dir, prefix="man_track", min_frames=1)
    seg = _seg_files(gt_dir / "SEG") if (gt_dir / "SEG").is_dir() else {}
    return CTCGroundTruth(path=gt_dir, seg=seg, tra=tra, lineage=lineage)


# --------------------------------------------------------------------------------------------
# Time windows of a sequence
# --------------------------------------------------------------------------------------------


def _window(start: int, stop: int | None, n: int, where) -> tuple[int, int]:
    stop = n if stop is None else int(stop)
    start = int(start)
    if start < 0 or stop > n or start >= stop:
        raise MovieError(f"{where}: frame window {start}:{stop} is empty or outside the "
                         f"{n} frames (0..{n - 1}); choose 0 <= start < stop <= {n}")
    return start, stop


def clip_lineage(lineage, start: int, stop: int) -> np.ndarray:
    """Clip a lineage to frames ``start..stop-1`` and renumber them from 0.

    Tracks outside the window are dropped; a parent not in the window becomes 0.
    """
    lin = _as_lineage(lineage)
    keep = (lin[:, 2] >= start) & (lin[:, 1] < stop)
    out = lin[keep].copy()
    out[:, 1] = np.maximum(out[:, 1], start) - start
    out[:, 2] = np.minimum(out[:, 2], stop - 1) - start
    out[~np.isin(out[:, 3], out[:, 0]), 3] = 0
    return out


def slice_ctc_gt(gt_dir, start: int, stop: int | None, out_dir) -> Path:
    """Cut frames ``start..stop-1`` out of a CTC ground-truth folder, renumbered from 0.

    Writes ``out_dir/TRA`` (markers + ``man_track.txt`` with tracks clipped to the window and
    parents outside it set to 0) and ``out_dir/SEG`` (only the SEG frames inside the window;
    there may be none), atomically. The result can be scored with the official measures
    against a result computed on the same window (see :func:`slice_movie_folder`).
    """
    gt = read_ctc_gt(gt_dir)
    start, stop = _window(start, stop, len(gt), gt_dir)
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, _GT_FILE, "CTC ground-truth folder (SEG, TRA)")
    n = stop - start
    tmp = _tmp_sibling(out_dir)
    try:
        (tmp / "SEG").mkdir()
        (tmp / "TRA").mkdir()
        for t in range(start, stop):
            # Files are copied as they are: slicing must not change a single pixel.
            shutil.copyfile(gt.tra.files[t], tmp / "TRA" / _frame_name("man_track", t - start, n))
            if t in gt.seg:
                shutil.copyfile(gt.seg[t], tmp / "SEG" / _frame_name("man_seg", t - start, n))
        write_lineage(tmp / "TRA" / "man_track.txt", clip_lineage(gt.lineage, start, stop))
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def slice_movie_folder(movie_path, start: int, stop: int | None, out_dir) -> Path:
    """Write frames ``start..stop-1`` of a movie as a CTC image folder ``t000.tif ...``.

    TIFF frames of a folder are copied unchanged; frames of a multi-page file are written.
    """
    movie = read_movie(movie_path)
    start, stop = _window(start, stop, len(movie), movie_path)
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, re.compile(r"^t\d+\.tiff?$"), "movie folder")
    n = stop - start
    tmp = _tmp_sibling(out_dir)
    try:
        for t in range(start, stop):
            dst = tmp / _frame_name("t", t - start, n)
            if movie.files is not None:
                shutil.copyfile(movie.files[t], dst)
            else:
                _write_tif(dst, movie[t])
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def slice_ctc_sequence(seq_dir, start: int, stop: int | None, out_root) -> tuple[Path, Path]:
    """Cut a window out of a CTC sequence ``.../01`` (+ ``01_GT``) into ``out_root/01(_GT)``.

    Returns the new image folder and ground-truth folder.
    """
    seq_dir = Path(seq_dir)
    gt_dir = seq_dir.parent / f"{seq_dir.name}_GT"
    out_root = Path(out_root)
    img = slice_movie_folder(seq_dir, start, stop, out_root / seq_dir.name)
    gt = slice_ctc_gt(gt_dir, start, stop, out_root / f"{seq_dir.name}_GT")
    return img, gt
