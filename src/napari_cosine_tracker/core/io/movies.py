"""Movies: lazy, checked reading of CTC image folders, numbered TIFFs, multi-page and
multichannel TIFFs and microscope files (bioio), and in-memory arrays."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

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
    if type(img.reader).__module__.startswith("bioio_lif"):
        # Leica files carry no OME metadata; bioio-lif gives the time axis as coordinates in
        # seconds (the T dimension's length over its frames), and no time_interval.
        try:
            t = np.asarray(img.reader.xarray_dask_data.coords["T"].values, float)
        except Exception:  # noqa: BLE001 - a single frame, or no time dimension described
            return None
        return float(t[1] - t[0]) / 60.0 if t.size > 1 and t[1] > t[0] else None
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


