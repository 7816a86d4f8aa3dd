"""Movies and Cell Tracking Challenge (CTC) folders: lazy reading, checked, atomic writing.

Movies
    :func:`read_movie` opens a CTC image folder (``t000.tif`` ...), any folder of numbered
    TIFFs, or one multi-page TIFF ``(T, Y, X)``; :func:`as_movie` wraps an in-memory array.
    Both return a :class:`Movie`: ``shape == (T, Y, X)``, ``dtype``, ``len()``, and
    ``movie[t]`` reads one 2-D frame on demand (memory-mapped where the file allows).
    Headers are checked up front without reading pixels; bad input raises :class:`MovieError`
    naming the file, the problem and the fix.

CTC folders
    Ground truth (``SEG/man_segTTT.tif``, ``TRA/man_trackTTT.tif``, ``TRA/man_track.txt``) is
    read by :func:`read_ctc_gt`; results (``maskTTT.tif`` + ``res_track.txt``) are written by
    :func:`write_ctc_result` into a temporary sibling folder that then replaces the old one,
    so an interrupted export never leaves a half-written result. :func:`slice_ctc_gt` and
    :func:`slice_movie_folder` cut a time window out of a sequence, renumbered from 0, so
    held-out frames can be scored with the official measures.

Lineage
    An ``int64`` array ``(N, 4)`` of rows ``id, first, last, parent`` -- the CTC ``L B E P``
    lines (:func:`read_lineage`, :func:`write_lineage`, :func:`lineage_from_labels`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile

__all__ = [
    "MovieError",
    "Movie",
    "read_movie",
    "as_movie",
    "CTCGroundTruth",
    "read_ctc_gt",
    "read_lineage",
    "write_lineage",
    "check_lineage",
    "lineage_from_labels",
    "write_ctc_result",
    "read_ctc_result",
    "write_movie_folder",
    "write_ctc_gt",
    "slice_ctc_gt",
    "slice_movie_folder",
    "slice_ctc_sequence",
]

TIFF_SUFFIXES = (".tif", ".tiff")
# The frame number is the last number of the name; what follows it is kept as part of the
# series' name, so cellpose's "t000_cp_masks.tif" reads like "t000.tif".
_NUMBERED = re.compile(r"^(?P<prefix>.*?)(?P<num>\d+)(?P<suffix>\D*)$")


class MovieError(ValueError):
    """Input that cannot be read as a movie or a CTC folder; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Movie
# --------------------------------------------------------------------------------------------


class Movie:
    """A lazily read 2-D time-lapse ``(T, Y, X)``.

    Use :func:`read_movie` or :func:`as_movie` to make one. ``movie[t]`` returns one frame as
    a 2-D numpy array, read on demand; slices and tuples (``movie[2:5, 10:20]``) work as on a
    numpy array, reading only the frames asked for, so a Movie can be handed to napari as
    layer data directly. ``np.asarray(movie)`` reads everything.

    Attributes
    ----------
    path : Path or None
        The file or folder it was read from (None for an in-memory array).
    files : list of Path or None
        One file per frame for a folder of frames, else None.
    frame_numbers : list of int
        The number in each frame's file name (CTC ``tTTT``), or ``0 .. T-1``.
    """

    def __init__(self, shape, dtype, path=None, files=None, frame_numbers=None):
        self._shape = tuple(int(s) for s in shape)
        self._dtype = np.dtype(dtype)
        self.path = Path(path) if path is not None else None
        self.files = list(files) if files is not None else None
        self.frame_numbers = (list(frame_numbers) if frame_numbers is not None
                              else list(range(self._shape[0])))
        #: (y, x) pixel size in micrometres and time between frames in minutes, from the
        #: file's metadata where it has them (microscope formats), else None
        self.pixel_size: tuple[float, float] | None = None
        self.frame_interval: float | None = None
        #: the channel read from a multichannel file, and the names of all its channels
        self.channel: int | None = None
        self.channel_names: list[str] = []

    # -- numpy-like protocol --------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self._shape))

    def __len__(self) -> int:
        return self._shape[0]

    def __iter__(self):
        for t in range(len(self)):
            yield self[t]

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is Ellipsis for k in key):
            i = next(i for i, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (3 - (len(key) - 1))
            key = key[:i] + fill + key[i + 1:]
        if len(key) > 3:
            raise IndexError(f"too many indices for a (T, Y, X) movie: {key!r}")
        tkey, rest = key[0], key[1:]
        if isinstance(tkey, (int, np.integer)):
            t = int(tkey)
            if t < 0:
                t += len(self)
            if not 0 <= t < len(self):
                raise IndexError(f"frame {tkey} out of range for a movie of {len(self)} frames")
            frame = self._checked(t)
            return frame[rest] if rest else frame
        ts = np.arange(len(self))[tkey]
        out = np.empty((len(ts),) + self._shape[1:], self._dtype)
        for i, t in enumerate(ts):
            out[i] = self._checked(int(t))
        return out[(slice(None),) + rest] if rest else out

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __repr__(self) -> str:
        src = str(self.path) if self.path is not None else "array"
        return f"{type(self).__name__}(shape={self.shape}, dtype={self.dtype}, path={src!r})"

    # -- reading ----------------------------------------------------------------------------
    def _source(self, t: int) -> str:
        if self.files is not None:
            return str(self.files[t])
        return str(self.path) if self.path is not None else "array"

    def _checked(self, t: int) -> np.ndarray:
        frame = self._read(t)
        if frame.shape != self._shape[1:]:
            raise MovieError(
                f"{self._source(t)}: frame {t} has shape {frame.shape}, expected "
                f"{self._shape[1:]} like the others; all frames must have one size")
        if frame.dtype.kind == "f" and not np.isfinite(frame).all():
            raise MovieError(
                f"{self._source(t)}: frame {t} contains NaN or Inf values; replace them "
                "(e.g. numpy.nan_to_num) or re-export the movie without them")
        return frame

    def _read(self, t: int) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError


class _ArrayMovie(Movie):
    def __init__(self, array, name="array"):
        super().__init__(array.shape, array.dtype)
        self._array = array
        self.name = name  # what error messages call the movie (e.g. a napari layer's name)

    def _source(self, t):
        return self.name

    def _read(self, t):
        return np.asarray(self._array[t])


class _FolderMovie(Movie):
    """One 2-D TIFF per frame."""

    def _read(self, t):
        return _read_2d(self.files[t])


class _StackMovie(Movie):
    """One multi-page TIFF; ``_squeeze`` maps the stored series shape to (T, Y, X)."""

    def __init__(self, path, shape, dtype, memmappable):
        super().__init__(shape, dtype, path=path)
        self._memmappable = memmappable
        self._mm = None

    def _read(self, t):
        if self._memmappable:
            if self._mm is None:
                try:
                    self._mm = tifffile.memmap(self.path, mode="r").reshape(self.shape)
                except Exception:  # not mappable after all: fall back to reading pages
                    self._memmappable = False
                    return self._read(t)
            return np.asarray(self._mm[t])
        try:
            with tifffile.TiffFile(self.path) as tf:
                return tf.asarray(key=t, series=0).reshape(self.shape[1:])
        except Exception as e:
            raise MovieError(f"{self.path}: cannot read frame {t} ({e}); the file may be "
                             "truncated or corrupt: export it again") from e

    def __getstate__(self):  # memory maps do not pickle; reopen in the other process
        state = self.__dict__.copy()
        state["_mm"] = None
        return state


def _read_2d(path: Path) -> np.ndarray:
    """Read a single-frame TIFF as 2-D, memory-mapped when the file allows it."""
    try:
        try:
            arr = tifffile.memmap(path, mode="r")
        except (ValueError, tifffile.TiffFileError, OSError):
            arr = tifffile.imread(path)
    except Exception as e:
        raise MovieError(f"{path}: cannot read the image ({e}); the file may be truncated "
                         "or corrupt: export it again") from e
    arr = np.asarray(arr)
    if arr.ndim > 2 and arr.size == np.prod(arr.shape[-2:]):
        arr = arr.reshape(arr.shape[-2:])  # drop leading singleton axes, e.g. (1, Y, X)
    return arr


@dataclass
class _Header:
    shape: tuple
    axes: str
    dtype: np.dtype
    rgb: bool
    memmappable: bool


def _header(path: Path) -> _Header:
    """Read a TIFF's layout (shape, axes, dtype) without reading pixels."""
    try:
        size = path.stat().st_size
        with tifffile.TiffFile(path) as tf:
            if not tf.series:
                raise MovieError(f"{path}: TIFF holds no image; export the frame again")
            if len(tf.series) > 1:
                shapes = ", ".join(str(x.shape) for x in tf.series[:4])
                raise MovieError(f"{path}: holds {len(tf.series)} images of differing shapes or "
                                 f"types ({shapes}); a movie needs frames of one size: export "
                                 "it again as one (T, Y, X) stack")
            s = tf.series[0]
            page = s.keyframe
            rgb = "S" in s.axes or int(getattr(page, "photometric", 1) or 1) == 2
            # Truncated files: the pixel data must fit in the file.
            end = None
            if s.dataoffset is not None:
                end = s.dataoffset + s.nbytes
            else:
                last = s.pages[-1] if len(s.pages) else page
                if last is not None and last.dataoffsets:
                    end = max(o + c for o, c in zip(last.dataoffsets, last.databytecounts))
            if end is not None and end > size:
                raise MovieError(
                    f"{path}: file is truncated ({size} bytes, image data needs {end}); "
                    "copy or export it again")
            return _Header(tuple(s.shape), s.axes, np.dtype(s.dtype), rgb,
                           s.dataoffset is not None)
    except MovieError:
        raise
    except OSError as e:
        raise MovieError(f"{path}: cannot open the file ({e})") from e
    except Exception as e:  # TiffFileError, or struct/value errors from a cut header
        raise MovieError(f"{path}: not a readable TIFF file ({type(e).__name__}: {e}); movies "
                         "must be TIFF (.tif/.tiff): convert it, or remove it from the "
                         "folder") from e


def _squeezed(h: _Header) -> tuple[tuple, str]:
    # Y and X stay even when one pixel long: a (T, 1, X) movie is not a single image.
    keep = [i for i, n in enumerate(h.shape) if n != 1 or h.axes[i] in "YX"]
    return tuple(h.shape[i] for i in keep), "".join(h.axes[i] for i in keep)


def _check_dtype(dtype: np.dtype, where: str):
    if dtype.kind not in "uif":
        raise MovieError(f"{where}: pixel type {dtype} is not supported; use integer or "
                         "floating-point grayscale images")


def _check_frame_header(path: Path, h: _Header) -> tuple[int, int]:
    """A file that must hold exactly one 2-D grayscale frame."""
    shape, axes = _squeezed(h)
    _check_dtype(h.dtype, str(path))
    if h.rgb or (len(shape) == 3 and shape[-1] in (3, 4) and "S" in axes):
        raise MovieError(f"{path}: RGB/colour image (shape {h.shape}); convert the frames to "
                         "single-channel grayscale (e.g. keep the nuclear channel)")
    if len(shape) == 2:
        return shape  # type: ignore[return-value]
    if len(h.shape) >= 2 and int(np.prod(h.shape[:-2])) == 1:
        return tuple(h.shape[-2:])  # a frame one pixel high or wide: only leading axes go
    if len(shape) < 2:
        raise MovieError(f"{path}: image of shape {h.shape} is not 2-D")
    if "C" in axes:
        raise MovieError(f"{path}: multichannel image (shape {h.shape}, axes {h.axes}); save "
                         "one channel (the nuclear stain) per frame")
    raise MovieError(
        f"{path}: holds {len(shape)}-D data (shape {h.shape}, axes {h.axes}) but a movie "
        "folder needs one 2-D frame per file; 3D volumes (Z) are not supported: save a "
        "maximum projection or a single plane per frame")


def _natural_key(p: Path):
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", p.name)]


def _tiffs_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in TIFF_SUFFIXES), key=_natural_key)


def _numbered_frames(folder: Path, prefix: str | None = None) -> tuple[list[Path], list[int]]:
    """The numbered TIFFs of a folder (one common prefix), in frame order."""
    files = _tiffs_in(folder)
    if not files:
        subs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = (f" (it has sub-folders {', '.join(subs[:5])}: pass the one with the frames)"
                if subs else "")
        raise MovieError(f"{folder}: folder has no TIFF files{hint}; a movie folder holds "
                         "one numbered TIFF per frame (t000.tif, t001.tif, ...)")
    groups: dict[str, list[tuple[int, Path]]] = {}
    unnumbered = []
    for p in files:
        m = _NUMBERED.match(p.stem)
        if m is None:
            unnumbered.append(p)
            continue
        groups.setdefault(m["prefix"] + ("<n>" + m["suffix"] if m["suffix"] else ""),
                          []).append((int(m["num"]), p))
    if prefix is not None:
        groups = {k: v for k, v in groups.items() if k == prefix}
        if not groups:
            raise MovieError(f"{folder}: no files named {prefix}<number>.tif")
    if not groups:
        raise MovieError(f"{folder}: TIFF files have no frame number in their names "
                         f"(e.g. {unnumbered[0].name}); name them like t000.tif, t001.tif, ...")
    if len(groups) > 1:
        names = ", ".join(f"'{k if '<n>' in k else k + '<n>'}.tif' ({len(v)} files)"
                          for k, v in sorted(groups.items()))
        raise MovieError(f"{folder}: mixes several numbered series ({names}); keep one series "
                         "of frames per folder")
    (items,) = groups.values()
    items.sort(key=lambda x: x[0])
    nums = [n for n, _ in items]
    if len(set(nums)) != len(nums):
        dup = sorted({n for n in nums if nums.count(n) > 1})
        raise MovieError(f"{folder}: frame number(s) {dup[:5]} appear twice (e.g. t1.tif and "
                         "t001.tif); keep one file per frame")
    return [p for _, p in items], nums


#: Microscope formats read through bioio (``pip install napari-cosine-tracker[formats]``).
BIOIO_SUFFIXES = (".ome.tif", ".ome.tiff", ".ome.zarr", ".zarr", ".nd2", ".czi", ".lif")


def _is_bioio(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in BIOIO_SUFFIXES)


def read_movie(path, channel: int | None = None) -> Movie:
    """Open a movie lazily: a CTC image folder, a folder of numbered TIFFs, a multi-page TIFF,
    or a microscope file (OME-TIFF, OME-Zarr, ND2, CZI, LIF, through bioio).

    Parameters
    ----------
    path : str or Path
        A folder of numbered 2-D TIFFs (``t000.tif``, ``t0000.tif``, ``frame_1.tif`` ...; any
        common prefix, sorted by number), or one TIFF file holding ``(T, Y, X)`` or
        ``(T, C, Y, X)``. A lone ``Z`` or page axis of a single file is read as time (ImageJ
        often labels time-lapses as slices). Microscope files keep their pixel size and
        frame interval (:attr:`Movie.pixel_size`, :attr:`Movie.frame_interval`).
    channel : int, optional
        The channel to track in a multichannel file (0-based); required when it has several.

    Returns
    -------
    Movie
        Frames are read on demand; only the headers are read here.

    Raises
    ------
    MovieError
        Missing path, empty folder, non-TIFF or truncated files, RGB or multichannel data,
        3-D volumes, a single 2-D image, frames of differing shapes or pixel types.
    """
    path = Path(path)
    if not path.exists():
        raise MovieError(f"{path}: no such file or folder; check the path")
    if _is_bioio(path):
        return _read_bioio(path, channel)
    if path.is_dir():
        movie = _read_folder(path)
    elif path.suffix.lower() not in TIFF_SUFFIXES:
        raise MovieError(f"{path}: not a TIFF or microscope file (expected .tif, .tiff, "
                         f"{', '.join(BIOIO_SUFFIXES[2:])}); convert the movie to a multi-page "
                         "TIFF or a folder of TIFF frames")
    else:
        return _read_stack(path, channel)
    if channel not in (None, 0):
        raise MovieError(f"{path}: a folder of single-channel frames has no channel {channel}")
    return movie


def read_masks(path, movie: Movie | None = None) -> Movie:
    """Open a movie of cell masks lazily: a folder of numbered label TIFFs (a CTC result or
    SEG folder, cellpose or StarDist output: one label image per frame, any ids per frame)
    or a ``(T, Y, X)`` label TIFF.

    ``movie``: the images the masks belong to; their frame count and size must agree.

    Raises
    ------
    MovieError
        What :func:`read_movie` refuses, floating-point or negative labels (checked on the
        first frame; every frame is checked again when linked), and masks that do not fit
        ``movie``.
    """
    path = Path(path)
    masks = read_movie(path)
    if masks.dtype.kind == "f":
        raise MovieError(f"{path}: masks are floating-point ({masks.dtype}), not labels; give "
                         "integer label images (0 background, one id per cell), e.g. cellpose's "
                         "*_masks.tif rather than its probability maps")
    first = np.asarray(masks[0])
    if first.size and first.min() < 0:
        raise MovieError(f"{path}: frame 0 has negative labels; use 0 for background and "
                         "positive ids for cells")
    if movie is not None and tuple(masks.shape) != tuple(movie.shape):
        raise MovieError(f"{path}: {masks.shape[0]} masks of {masks.shape[1:]} pixels do not fit "
                         f"the movie's {movie.shape[0]} frames of {movie.shape[1:]} pixels; give "
                         "the masks made from this movie (one per frame, same size)")
    return masks


def _read_folder(folder: Path, prefix: str | None = None, min_frames: int = 2) -> Movie:
    files, nums = _numbered_frames(folder, prefix)
    first = None
    for p in files:
        h = _header(p)
        yx = _check_frame_header(p, h)
        if first is None:
            first = (yx, h.dtype, p)
        elif yx != first[0]:
            raise MovieError(f"{p}: frame of shape {yx} differs from {first[2].name} "
                             f"{first[0]}; all frames of a movie must have one size")
        elif h.dtype != first[1]:
            raise MovieError(f"{p}: pixel type {h.dtype} differs from {first[2].name} "
                             f"({first[1]}); save all frames with one pixel type")
    if len(files) < min_frames:
        raise MovieError(f"{folder}: holds a single 2-D image ({files[0].name}); tracking needs "
                         "a movie of several frames")
    return _FolderMovie((len(files),) + tuple(first[0]), first[1], path=folder, files=files,
                        frame_numbers=nums)


def _read_stack(path: Path, channel: int | None = None) -> Movie:
    h = _header(path)
    if "C" in h.axes and len(_squeezed(h)[0]) == 4 and not h.rgb:  # (T, C, Y, X)
        return _read_tiff_channel(path, h, channel)
    _check_dtype(h.dtype, str(path))
    shape, axes = _squeezed(h)
    if h.rgb:
        raise MovieError(f"{path}: RGB/colour data (shape {h.shape}, axes {h.axes}); convert "
                         "to single-channel grayscale (e.g. keep the nuclear channel)")
    if len(shape) == 2:
        raise MovieError(f"{path}: a single 2-D image (shape {h.shape}); tracking needs a movie "
                         "(T, Y, X): pass a multi-page TIFF or a folder of frames")
    if len(shape) == 3:
        if "C" in axes and shape[axes.index("C")] <= 4:
            raise MovieError(f"{path}: multichannel image (shape {h.shape}, axes {h.axes}) "
                             "with no time axis; a movie needs several frames")
        if channel not in (None, 0):
            raise MovieError(f"{path}: a single-channel movie has no channel {channel}")
        return _StackMovie(path, shape, h.dtype, h.memmappable)
    if "S" in axes:
        raise MovieError(f"{path}: multichannel data (shape {h.shape}, axes {h.axes}); save "
                         "the nuclear channel alone as (T, Y, X)")
    raise MovieError(f"{path}: {len(shape)}-D data (shape {h.shape}, axes {h.axes}); only 2-D "
                     "movies (T, Y, X) are supported, not 3D volumes (Z): save a maximum "
                     "projection or one plane")


def _pick_channel(where, n: int, channel, names=()) -> int:
    """The channel to read, or a MovieError that lists them and says how to choose."""
    listed = ", ".join(f"{i}: {nm}" for i, nm in enumerate(names)) if names else f"0-{n - 1}"
    if channel is None:
        if n == 1:
            return 0
        raise MovieError(f"{where}: a multichannel movie, {n} channels ({listed}); choose the "
                         "one to track with --channel N (the channel picker in napari)")
    if not 0 <= int(channel) < n:
        raise MovieError(f"{where}: no channel {channel}; it has {n} ({listed})")
    return int(channel)


class _AxesMovie(Movie):
    """One channel of a multichannel array-like whose axes are named (``"TCYX"``, ``"CTYX"``,
    with other axes of length 1), read a frame at a time."""

    def __init__(self, array, axes: str, channel: int, path=None):
        size = dict(zip(axes, array.shape))
        super().__init__((size["T"], size["Y"], size["X"]), array.dtype, path=path)
        self._array, self._axes, self.channel = array, axes, channel

    def _read(self, t):
        index = tuple(t if a == "T" else self.channel if a == "C" else
                      slice(None) if a in "YX" else 0 for a in self._axes)
        return np.asarray(self._array[index])


def _read_tiff_channel(path: Path, h, channel) -> Movie:
    """One channel of a (T, C, Y, X) TIFF, lazily through tifffile's zarr view of the pages."""
    import zarr

    axes = h.axes
    if "T" not in axes and "Z" in axes and "C" in axes:
        axes = axes.replace("Z", "T")  # ImageJ often labels time as slices
    others = [a for a, n in zip(axes, h.shape) if a not in "TCYX" and n > 1]
    if others or not set("TCYX") <= set(axes):
        raise MovieError(f"{path}: data of shape {h.shape} (axes {h.axes}); only (T, C, Y, X) "
                         "multichannel movies are supported")
    array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if isinstance(array, zarr.Group):  # a pyramid: level 0 is the full resolution
        array = array["0"]
    n_channels = dict(zip(axes, h.shape))["C"]
    movie = _AxesMovie(array, axes, _pick_channel(path, n_channels, channel), path=path)
    movie.channel_names = [f"channel {i}" for i in range(n_channels)]
    _check_dtype(movie.dtype, str(path))
    return movie


def _read_bioio(path: Path, channel) -> Movie:
    """A microscope file through bioio: one channel, one plane, read a frame at a time, with
    its pixel size and frame interval."""
    try:
        from bioio import BioImage
    except ImportError:
        raise MovieError(f"{path}: reading this format needs bioio: pip install "
                         "'napari-cosine-tracker[formats]' (OME-TIFF, OME-Zarr, ND2, CZI, LIF), "
                         "or save the movie as a multi-page TIFF") from None
    try:
        img = BioImage(path)
    except Exception as e:  # noqa: BLE001 - each reader plugin raises its own errors
        raise MovieError(f"{path}: could not be read ({type(e).__name__}: {e}); is the reader "
                         "for this format installed (napari-cosine-tracker[formats])?") from e
    dims = img.dims
    if getattr(dims, "Z", 1) > 1:
        raise MovieError(f"{path}: a 3-D movie ({dims.Z} planes); only 2-D movies (T, Y, X) "
                         "are supported: save a maximum projection or one plane")
    if getattr(dims, "S", 1) > 1:
        raise MovieError(f"{path}: RGB samples; convert to single-channel grayscale")
    if dims.T < 2:
        raise MovieError(f"{path}: a single time point; tracking needs a movie of several frames")
    names = [str(n) for n in (img.channel_names or [])]
    c = _pick_channel(path, dims.C, channel, names)
    movie = _BioioMovie(img, c, path)
    movie.channel_names = names
    sizes = img.physical_pixel_sizes
    if sizes.Y and sizes.X:
        movie.pixel_size = (float(sizes.Y), float(sizes.X))
    movie.frame_interval = _bioio_frame_interval(img)
    _check_dtype(movie.dtype, str(path))
    return movie


_SECONDS = {"s": 1.0, "ms": 1e-3, "µs": 1e-6, "us": 1e-6, "ns": 1e-9, "min": 60.0, "h": 3600.0,
            "second": 1.0, "millisecond": 1e-3, "microsecond": 1e-6, "nanosecond": 1e-9,
            "minute": 60.0, "hour": 3600.0, "day": 86400.0}


def _ngff_time_unit(img) -> str | None:
    """The unit of an OME-Zarr's time axis (NGFF ``multiscales[0].axes``), if declared."""
    try:
        meta = img.metadata
        meta = getattr(meta, "attributes", meta)  # zarr 3 GroupMetadata, or a dict
        attrs = meta.get("ome", meta)  # NGFF 0.5 nests under "ome"
        for axis in attrs["multiscales"][0]["axes"]:
            if axis.get("type") == "time":
                return axis.get("unit")
    except Exception:  # noqa: BLE001 - not an OME-Zarr, or no axes metadata
        return None
    return None


def _bioio_frame_interval(img) -> float | None:
    """Minutes between frames (the exports' time unit): bioio's ``time_interval``, else the
    OME metadata's ``TimeIncrement`` (which some readers do not pass on); None if unknown."""
    try:
        dt = img.time_interval
    except Exception:  # noqa: BLE001 - not every reader knows it
        dt = None
    if dt and hasattr(dt, "total_seconds"):
        return dt.total_seconds() / 60.0
    if dt:  # a bare number (OME-Zarr): in the unit its time axis declares
        unit = _ngff_time_unit(img)
        return float(dt) * _SECONDS[unit] / 60.0 if unit in _SECONDS else None
    try:
        pixels = img.ome_metadata.images[img.current_scene_index].pixels
        value, unit = pixels.time_increment, pixels.time_increment_unit
    except Exception:  # noqa: BLE001 - no OME metadata in this format
        return None
    if not value:
        return None
    unit = getattr(unit, "value", unit) or "s"
    return float(value) * _SECONDS.get(str(unit), 1.0) / 60.0


class _BioioMovie(Movie):
    def __init__(self, img, channel, path):
        super().__init__((img.dims.T, img.dims.Y, img.dims.X), img.dtype, path=path)
        self._img, self.channel = img, channel

    def _read(self, t):
        return np.asarray(self._img.get_image_dask_data("YX", T=t, C=self.channel, Z=0).compute())


def as_movie(data, name: str = "array") -> Movie:
    """Return ``data`` as a :class:`Movie`: a Movie unchanged, or a ``(T, Y, X)`` array wrapped.

    The array gets the same checks as files (dimensions, RGB, pixel type; NaN/Inf when a frame
    is read). Any array-like with ``shape``, ``dtype`` and ``__getitem__`` (dask, zarr,
    numpy memmap) stays lazy.
    """
    if isinstance(data, Movie):
        return data
    if not (hasattr(data, "shape") and hasattr(data, "dtype") and hasattr(data, "__getitem__")):
        try:
            data = np.asarray(data)
        except ValueError as e:  # a list of frames of differing sizes
            raise MovieError(f"{name}: frames cannot be stacked into one (T, Y, X) movie ({e}); "
                             "all frames of a movie must have one size") from e
    shape, dtype = tuple(data.shape), np.dtype(data.dtype)
    _check_dtype(dtype, name)
    if len(shape) == 2:
        raise MovieError(f"{name}: a single 2-D image (shape {shape}); tracking needs a movie "
                         "(T, Y, X) of several frames")
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4 and shape[1] > 4:
        raise MovieError(f"{name}: shape {shape} looks like one RGB image (Y, X, colour); "
                         "pass grayscale frames (T, Y, X)")
    if len(shape) == 4 and shape[-1] in (3, 4):
        raise MovieError(f"{name}: shape {shape} looks like an RGB movie (T, Y, X, colour); "
                         "keep one channel: data[..., c]")
    if len(shape) != 3:
        raise MovieError(f"{name}: {len(shape)}-D data (shape {shape}); expected a 2-D movie "
                         "(T, Y, X), not a 3D volume (Z) or multichannel stack: select one "
                         "channel / plane, or project")
    if shape[0] < 1 or shape[1] < 1 or shape[2] < 1:
        raise MovieError(f"{name}: empty movie (shape {shape})")
    return _ArrayMovie(data, name)


# --------------------------------------------------------------------------------------------
# Lineage
# --------------------------------------------------------------------------------------------


def read_lineage(path) -> np.ndarray:
    """Read a CTC track file (``man_track.txt`` / ``res_track.txt``: ``L B E P`` per line).

    Returns
    -------
    ndarray, int64, shape (N, 4)
        Rows ``id, first, last, parent``, in file order.

    Raises
    ------
    MovieError
        Missing file; a line that is not four non-negative integers or ends before it begins
        (the message gives line number and content); duplicate labels.
    """
    path = Path(path)
    if not path.is_file():
        raise MovieError(f"{path}: track file not found; a CTC folder needs it "
                         "(man_track.txt for ground truth, res_track.txt for results)")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            text = line.strip()
            if not text:
                continue
            parts = text.split()
            try:
                vals = [int(p) for p in parts]
            except ValueError:
                vals = None
            if vals is None or len(vals) != 4:
                raise MovieError(f"{path}, line {n}: {text!r} is not 'L B E P' (four integers: "
                                 "label, first frame, last frame, parent); fix or remove it")
            if max(vals) > np.iinfo(np.int64).max:
                raise MovieError(f"{path}, line {n}: {text!r} has a number too large for a "
                                 "label or frame; fix or remove the line")
            if min(vals) < 0 or vals[0] == 0:
                raise MovieError(f"{path}, line {n}: {text!r} has a negative value or label 0; "
                                 "labels are positive, frames and parents >= 0")
            if vals[2] < vals[1]:
                raise MovieError(f"{path}, line {n}: {text!r}: track ends (E={vals[2]}) before "
                                 f"it begins (B={vals[1]})")
            rows.append(vals)
    lin = np.array(rows, np.int64).reshape(-1, 4)
    ids, counts = np.unique(lin[:, 0], return_counts=True)
    if (counts > 1).any():
        raise MovieError(f"{path}: label(s) {ids[counts > 1][:5].tolist()} appear on more "
                         "than one line; each track needs its own label")
    return lin


@contextmanager
def atomic_file(path, mode: str = "wb", suffix: str = ".tmp"):
    """Write one file atomically: ``with atomic_file(path, "w") as f: ...`` writes a hidden
    temporary file beside ``path`` (``f.name``), flushed to disk, and renames it into place
    only when the block succeeds; on any error (disk full, a crash) ``path`` keeps its old
    content and no temporary file is left. The file gets the usual permissions (umask), not
    mkstemp's owner-only ones. ``suffix`` matters to writers that pick the format from it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_lineage(path, lineage) -> Path:
    """Write a lineage as a CTC track file (``L B E P`` lines), atomically."""
    path = Path(path)
    lin = _as_lineage(lineage)
    text = "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in lin.tolist())
    _clean_stale(path.parent, path.name)
    with atomic_file(path, "w") as f:
        f.write(text)
    return path


def _as_lineage(lineage) -> np.ndarray:
    lin = np.asarray(lineage if lineage is not None else np.zeros((0, 4)))
    if lin.size == 0:
        return np.zeros((0, 4), np.int64)
    if lin.ndim != 2 or lin.shape[1] != 4:
        raise MovieError(f"lineage must be an (N, 4) array of id, first, last, parent; got "
                         f"shape {lin.shape}")
    if lin.dtype.kind not in "ui" and not np.array_equal(lin, np.round(lin)):
        raise MovieError("lineage must hold integers (id, first, last, parent)")
    return lin.astype(np.int64)


def check_lineage(lineage, presence: Mapping[int, Sequence[int]] | None = None,
                  n_frames: int | None = None) -> list[str]:
    """List the problems of a lineage (empty list: valid for the CTC measures).

    Parameters
    ----------
    lineage : (N, 4) array
        Rows ``id, first, last, parent``.
    presence : mapping of frame -> labels present in that frame, optional
        If given, every label in a frame must have a row covering that frame, and every row
        must be present on all its frames ``first..last``.
    n_frames : int, optional
        Number of frames; rows must lie inside ``0..n_frames-1``.
    """
    lin = _as_lineage(lineage)
    problems: list[str] = []
    ids = lin[:, 0]
    uniq, counts = np.unique(ids, return_counts=True)
    for i in uniq[counts > 1][:10]:
        problems.append(f"label {i} has more than one row")
    if (lin < 0).any():
        problems.append("negative values in the lineage")
    if (ids == 0).any():
        problems.append("label 0 is background and cannot be a track")
    for i, b, e, p in lin.tolist():
        if e < b:
            problems.append(f"track {i} ends (frame {e}) before it begins (frame {b})")
        if n_frames is not None and (b < 0 or e >= n_frames):
            problems.append(f"track {i} spans frames {b}..{e}, outside 0..{n_frames - 1}")
    rows = {r[0]: r for r in lin.tolist()}
    for i, b, e, p in lin.tolist():
        if p == 0:
            continue
        if p == i:
            problems.append(f"track {i} is its own parent")
        elif p not in rows:
            problems.append(f"track {i} has parent {p}, which has no row")
        elif rows[p][2] >= b:
            problems.append(f"parent {p} ends at frame {rows[p][2]}, not before its daughter "
                            f"{i} begins (frame {b})")
    if presence is not None:
        span: dict[int, set] = {}
        for t, labs in presence.items():
            for lab in labs:
                span.setdefault(int(lab), set()).add(int(t))
        for lab, ts in sorted(span.items()):
            if lab not in rows:
                problems.append(f"label {lab} is in frame(s) {_fmt_frames(ts)} but has no "
                                "lineage row")
                continue
            _, b, e, _ = rows[lab]
            outside = sorted(t for t in ts if not b <= t <= e)
            if outside:
                problems.append(f"label {lab} is in frame(s) {_fmt_frames(outside)} outside its "
                                f"row's frames {b}..{e}")
        for i, b, e, _ in lin.tolist():
            ts = span.get(i, set())
            missing = [t for t in range(b, e + 1) if t not in ts]
            if missing:
                problems.append(f"track {i} (frames {b}..{e}) is missing from frame(s) "
                                f"{_fmt_frames(missing)}; tracks must be present on every "
                                "frame from first to last")
    return problems


def _fmt_frames(ts) -> str:
    ts = sorted(ts)
    return ", ".join(map(str, ts[:8])) + (f" ... ({len(ts)} frames)" if len(ts) > 8 else "")


def _labels_in(frame: np.ndarray) -> np.ndarray:
    u = np.unique(frame)
    return u[u != 0]


def _frames(labels) -> tuple[int, Iterable[np.ndarray]]:
    """(T, iterator over 2-D frames) for an array, Movie or sequence of frames."""
    if isinstance(labels, (str, os.PathLike)):
        raise MovieError(f"labels must be an array or a sequence of frames, not a path "
                         f"({labels}); read it with read_movie first")
    n = len(labels)
    return n, (np.asarray(labels[t]) for t in range(n))


def lineage_from_labels(labels, parents: Mapping[int, int] | None = None) -> np.ndarray:
    """Derive the lineage ``id, first, last, parent`` of a tracked label stack.

    Parameters
    ----------
    labels : (T, Y, X) array, Movie, or sequence of 2-D frames
        Values are track ids (0 = background). Read one frame at a time.
    parents : mapping child id -> parent id, optional
        Division links; absent ids get parent 0.

    Raises
    ------
    MovieError
        If a label vanishes and comes back (a CTC track must be present on every frame from
        its first to its last: give the part after the gap a new id, with the first part as
        parent if it is the same cell).
    """
    parents = dict(parents or {})
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    count: dict[int, int] = {}
    n, frames = _frames(labels)
    for t, frame in enumerate(frames):
        for lab in _labels_in(frame).tolist():
            first.setdefault(lab, t)
            last[lab] = t
            count[lab] = count.get(lab, 0) + 1
    gaps = [lab for lab in first if count[lab] != last[lab] - first[lab] + 1]
    if gaps:
        raise MovieError(
            f"label(s) {sorted(gaps)[:10]} disappear and come back; a CTC track must be present "
            "on every frame from its first to its last: give the part after the gap a new label")
    unknown = sorted(c for c in parents if c not in first)
    if unknown:
        raise MovieError(f"parents given for label(s) {unknown[:10]} that are not in the labels")
    rows = [[lab, first[lab], last[lab], int(parents.get(lab, 0))] for lab in sorted(first)]
    return np.array(rows, np.int64).reshape(-1, 4)


# --------------------------------------------------------------------------------------------
# Atomic folder writing
# --------------------------------------------------------------------------------------------

_RESULT_FILE = re.compile(r"^(mask\d+\.tiff?|res_track\.txt)$")


def _frame_name(prefix: str, t: int, n_frames: int, digits: int | None = None) -> str:
    d = digits or (4 if n_frames > 1000 else 3)
    return f"{prefix}{t:0{d}d}.tif"


# A temporary sibling untouched this long belongs to a killed writer, not a running one
# (a running export touches its folder with every frame it writes).
STALE_TMP_S = 600


def _clean_stale(parent: Path, name: str) -> None:
    """Delete what killed writers of ``parent/name`` left behind: ``.name.tmp-*`` folders,
    ``.name.*.tmp`` files and, once ``name`` exists again, ``.name.old-*`` leftovers."""
    import glob
    import time

    now, esc = time.time(), glob.escape(name)
    patterns = [f".{esc}.tmp-*", f".{esc}.*.tmp"]
    if (parent / name).exists():
        patterns.append(f".{esc}.old-*")
    for p in (p for pattern in patterns for p in parent.glob(pattern)):
        try:
            if now - p.stat().st_mtime >= STALE_TMP_S:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        except OSError:
            pass


def _tmp_sibling(out_dir: Path) -> Path:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir.parent, out_dir.name)
    return Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``, which
    the standard library does not wrap); False where the system cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap_in(tmp: Path, out_dir: Path):
    """Replace ``out_dir`` (a folder or a file) by ``tmp``; on failure the old one is kept,
    and it is deleted only once the new one is in place.

    Where the system can, the two are exchanged in one atomic step, so a kill at any moment
    leaves ``out_dir`` holding the old result or the new one; elsewhere two renames, with a
    moment between them where a kill leaves the old result aside (which reading the result
    then names)."""
    if out_dir.is_symlink() or out_dir.exists():
        if _exchange(tmp, out_dir):
            # ``tmp`` now holds the old result (or the link that stood there: only the link goes).
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            return
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        old.rmdir()
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        if old is not None:
            os.replace(old, out_dir)
        raise
    if old is not None:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def _guard_overwrite(out_dir: Path, allowed: re.Pattern | None, what: str):
    """Refuse to replace a folder that holds anything but a previous output of this kind."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise MovieError(f"{out_dir}: exists and is not a folder; choose another output path")
    if allowed is None:
        return
    other = [p.name for p in out_dir.iterdir() if not allowed.match(p.name)]
    if other:
        raise MovieError(f"{out_dir}: folder holds other files ({', '.join(sorted(other)[:5])}) "
                         f"and does not look like a {what}; it would be replaced as a whole: "
                         "choose a new or empty folder")


def _write_tif(path: Path, frame: np.ndarray):
    tifffile.imwrite(path, frame, compression="zlib")


def _as_uint16_labels(frame: np.ndarray, t: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 2:
        raise MovieError(f"labels frame {t} has shape {frame.shape}; each frame must be 2-D "
                         "(Y, X)")
    if frame.dtype.kind not in "ui":
        if frame.dtype.kind == "b" or not np.array_equal(frame, np.round(frame)):
            raise MovieError(f"labels frame {t} has pixel type {frame.dtype}; labels must be "
                             "integer track ids")
    if frame.size and (frame.min() < 0 or frame.max() > 65535):
        raise MovieError(f"labels frame {t} has values outside 0..65535; CTC masks are uint16: "
                         "relabel the tracks (e.g. skimage.segmentation.relabel_sequential)")
    return frame.astype(np.uint16, copy=False)


def write_ctc_result(out_dir, labels, lineage=None, *, parents=None, check: bool = True,
                     digits: int | None = None) -> Path:
    """Write a CTC result folder: ``maskTTT.tif`` (uint16) per frame and ``res_track.txt``.

    Frames are written into a temporary sibling folder which then replaces ``out_dir`` by
    renames, so an interrupted export leaves the previous result untouched.

    Parameters
    ----------
    out_dir : str or Path
        The result folder (e.g. ``.../01_RES``). An existing folder is replaced only if it
        holds nothing but masks and ``res_track.txt``.
    labels : (T, Y, X) array, Movie, or sequence of 2-D frames
        Tracked labels; frames are taken one at a time, so the stack need not be in memory.
    lineage : (N, 4) array, optional
        Rows ``id, first, last, parent``; derived with :func:`lineage_from_labels` (using
        ``parents``) if omitted.
    parents : mapping child -> parent, optional
        Division links, used only when ``lineage`` is omitted.
    check : bool
        Check the lineage against the labels (every label in a frame has a row covering that
        frame, rows are present on all their frames, parents end before daughters begin) and
        raise before replacing anything if it does not hold.
    digits : int, optional
        Digits of the frame number in file names (default 3, or 4 when T > 1000).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    MovieError
        Inconsistent lineage, non-integer or out-of-range labels, unsafe output folder.
    """
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, _RESULT_FILE, "CTC result folder (maskTTT.tif + res_track.txt)")
    n, frames = _frames(labels)
    if n == 0:
        raise MovieError("labels have no frames; nothing to write")
    tmp = _tmp_sibling(out_dir)
    try:
        presence: dict[int, np.ndarray] = {}
        for t, frame in enumerate(frames):
            frame = _as_uint16_labels(frame, t)
            _write_tif(tmp / _frame_name("mask", t, n, digits), frame)
            presence[t] = _labels_in(frame)
        if lineage is None:
            lin = _lineage_from_presence(presence, parents)
        else:
            lin = _as_lineage(lineage)
        if check:
            problems = check_lineage(lin, presence, n_frames=n)
            if problems:
                more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
                raise MovieError(f"{out_dir}: labels and lineage disagree: "
                                 + "; ".join(problems[:5]) + more
                                 + ". Nothing was written; fix the lineage (lineage_from_labels "
                                   "derives one from the labels)")
        write_lineage(tmp / "res_track.txt", lin)
        _swap_in(tmp, out_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno is not None and not e.filename:  # e.g. a full disk: say where
            raise OSError(e.errno, e.strerror, str(out_dir)) from e
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _lineage_from_presence(presence, parents):
    # Reuse lineage_from_labels' checks on the per-frame label sets already collected.
    n = len(presence)
    fake = [presence[t] for t in range(n)]
    return lineage_from_labels(_LabelSets(fake), parents)


class _LabelSets:
    """Frames given as label sets; ``np.unique`` of one is the set itself."""

    def __init__(self, sets):
        self._sets = sets

    def __len__(self):
        return len(self._sets)

    def __getitem__(self, t):
        return self._sets[t]


def read_ctc_result(res_dir) -> tuple[Movie, np.ndarray]:
    """Read a CTC result folder: (lazy ``maskTTT.tif`` movie, lineage from ``res_track.txt``)."""
    res_dir = Path(res_dir)
    if not res_dir.is_dir():
        # A process killed between _swap_in's two renames leaves the previous result aside.
        left = sorted(res_dir.parent.glob(f".{res_dir.name}.old-*")) if res_dir.parent.is_dir() else []
        hint = (f"; an interrupted export left the previous result in {left[-1]}: rename it "
                f"to {res_dir.name} to use it" if left else "")
        raise MovieError(f"{res_dir}: result folder not found{hint}")
    lineage = read_lineage(res_dir / "res_track.txt")
    return _read_folder(res_dir, prefix="mask", min_frames=1), lineage


def write_movie_folder(out_dir, images, prefix: str = "t", digits: int | None = None) -> Path:
    """Write frames as ``tTTT.tif`` (CTC image folder), atomically; one frame at a time."""
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, re.compile(rf"^{re.escape(prefix)}\d+\.tiff?$"), "movie folder")
    movie = as_movie(images) if not isinstance(images, Movie) else images
    n = len(movie)
    tmp = _tmp_sibling(out_dir)
    try:
        for t in range(n):
            _write_tif(tmp / _frame_name(prefix, t, n, digits), np.asarray(movie[t]))
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


_GT_FILE = re.compile(r"^(SEG|TRA)$")


def write_ctc_gt(out_dir, labels, lineage=None, *, seg_frames: Iterable[int] | None = None,
                 seg_labels=None, parents=None) -> Path:
    """Write a CTC ground-truth folder (``SEG/``, ``TRA/`` and ``TRA/man_track.txt``), atomically.

    Parameters
    ----------
    labels : (T, Y, X) array, Movie or sequence of frames
        Tracked labels, written as the TRA masks (full masks are valid TRA markers).
    lineage : (N, 4) array, optional
        Derived from ``labels`` if omitted.
    seg_frames : iterable of int, optional
        Frames that get a ``SEG/man_segTTT.tif``; default all.
    seg_labels : (T, Y, X) array or sequence, optional
        Segmentation truth if it differs from ``labels``.
    """
    out_dir = Path(out_dir)
    _guard_overwrite(out_dir, _GT_FILE, "CTC ground-truth folder (SEG, TRA)")
    n, _ = _frames(labels)
    seg_set = set(range(n)) if seg_frames is None else {int(t) for t in seg_frames}
    seg_src = labels if seg_labels is None else seg_labels
    tmp = _tmp_sibling(out_dir)
    try:
        (tmp / "SEG").mkdir()
        (tmp / "TRA").mkdir()
        presence = {}
        for t in range(n):
            frame = _as_uint16_labels(labels[t], t)
            _write_tif(tmp / "TRA" / _frame_name("man_track", t, n), frame)
            presence[t] = _labels_in(frame)
            if t in seg_set:
                seg = _as_uint16_labels(seg_src[t], t)
                _write_tif(tmp / "SEG" / _frame_name("man_seg", t, n), seg)
        lin = (_lineage_from_presence(presence, parents) if lineage is None
               else _as_lineage(lineage))
        problems = check_lineage(lin, presence, n_frames=n)
        if problems:
            raise MovieError(f"{out_dir}: labels and lineage disagree: " + "; ".join(problems[:5]))
        write_lineage(tmp / "TRA" / "man_track.txt", lin)
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


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
