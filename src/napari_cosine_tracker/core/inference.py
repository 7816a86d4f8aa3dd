"""Streaming inference: feed a movie one frame at a time, keep the ConvGRU state in between.

:class:`EmbeddingStream` normalises and rescales each frame to the model's pixel scale, runs
the recurrent network, and returns that frame's embeddings. Nothing of older frames is kept
but the recurrent state, so memory stays flat with movie length. Frames larger than
``tile_size`` model pixels are cut into overlapping tiles, each with its own recurrent state
(tiles stay put from frame to frame), and stitched by keeping each tile's centre, so no seam
falls where a tile saw only half its context.
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import torch
import torch.nn.functional as F

from .devices import keep_freed_memory, resolve_device
from .model import RecurrentHourglass, RecurrentState, load_model
from .preprocess import DEFAULT_PERCENTILES, normalize_frame, rescale_image

__all__ = ["EmbeddingStream", "embed_movie", "WARMUP_FRAMES"]

#: Times frame 0 is run (outputs dropped) before it is labelled, to settle the recurrent state.
WARMUP_FRAMES = 4


def _launch_numba_keeping_torch_threads() -> None:
    """Start numba's thread pool now, then give torch back its thread count.

    numba (the HDBSCAN code of the clustering step) shares torch's OpenMP runtime, and
    launching its pool -- lazily, at its first parallel loop -- sets the calling thread's
    OpenMP thread count to all cores, silently undoing ``torch.set_num_threads``. The model
    then runs on more threads than asked for, which on cores that are busy (other processes,
    parallel workers) spin-wait and make every following frame several times slower.
    """
    try:
        from numba.np.ufunc import parallel
    except ImportError:  # numba absent: nothing can change torch's threads
        return
    n = torch.get_num_threads()
    parallel._launch_threads()  # idempotent: once per process
    torch.set_num_threads(n)


def check_scale(scale) -> float:
    """``scale`` (resize factor for cells of another size) as a float, or a clear error."""
    if not (isinstance(scale, (int, float)) and 0.05 <= float(scale) <= 20):
        raise ValueError(f"scale must be a number between 0.05 and 20 (the factor to resize "
                         f"frames by for cells of another size), got {scale!r}")
    return float(scale)


def _tiles(length: int, tile: int, overlap: int, multiple: int = 1):
    """Start, end and kept (inner) range of overlapping tiles along one axis: as few tiles
    of at most ``tile`` as cover ``length`` with ``overlap`` between neighbours, all of one
    size, the smallest that does (a multiple of ``multiple``, the model's padding unit,
    where it fits), evenly spread. Fixed-size tiles cost up to twice the frame's own pixels
    just past a tile's size (a 735-pixel side as two 512-pixel tiles); balanced ones cost
    the overlap alone. Each tile keeps the pixels up to the middle of its overlaps."""
    if length <= tile:
        return [(0, length, 0, length)]
    n = -(-(length - overlap) // (tile - overlap))
    size = -(-(length + (n - 1) * overlap) // n)
    size = min(tile, length, -(-size // multiple) * multiple) if multiple > 1 else size
    starts = [round(i * (length - size) / (n - 1)) for i in range(n)]
    out = []
    for i, s in enumerate(starts):
        keep_lo = 0 if i == 0 else (s + starts[i - 1] + size) // 2
        keep_hi = length if i == n - 1 else (starts[i + 1] + s + size) // 2
        out.append((s, s + size, keep_lo, keep_hi))
    return out


class EmbeddingStream:
    """Recurrent inference over a movie, one frame at a time.

    Parameters
    ----------
    model_dir : path, optional
        Model folder (``weights.safetensors`` + ``config.json``); default: the shipped model.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    half : bool
        Half precision on GPU (ignored on CPU).
    tile_size, tile_overlap : int
        Frames larger than ``tile_size`` model pixels are processed in overlapping tiles.
    model, config : optional
        An already loaded model and its config dict (instead of ``model_dir``).
    channels_last : bool
        Run the network on channels-last tensors (CPU and CUDA; faster, same results). The
        model's weights are converted in place.
    scale : float
        Resize frames by this factor on top of the model's pixel scale, for cells of another
        size than the training data's: 2 when they are half as wide, 0.5 when twice as wide.
        Clustering settings in model pixels keep their meaning; labels come back at the
        movie's size.

    Examples
    --------
    >>> stream = EmbeddingStream()                          # doctest: +SKIP
    >>> for frame in movie:                                 # doctest: +SKIP
    ...     emb = stream.push(frame)   # (d, y, x) at the model's pixel scale
    """

    def __init__(self, model_dir=None, device="auto", half=False, tile_size=512, tile_overlap=64, model=None, config=None,
                 channels_last=True, scale=1.0):
        check_scale(scale)
        self.device = resolve_device(device)
        _launch_numba_keeping_torch_threads()
        if self.device.type == "cpu":
            keep_freed_memory()
        if model is None:
            model, config = load_model(model_dir, device=self.device)
        self.model: RecurrentHourglass = model.to(self.device).eval()
        # Channels-last (NHWC) activations let oneDNN run the 3x3 convolutions without
        # reordering every input and output: ~1.3-1.5x faster per frame on CPU, same numbers.
        self.memory_format = (torch.channels_last if channels_last and self.device.type in ("cpu", "cuda")
                              else torch.contiguous_format)
        self.model.to(memory_format=self.memory_format)
        self.config = config or {}
        pre = self.config.get("preprocessing", {})
        self.scale = float(scale)
        self.pixel_scale = float(pre.get("pixel_scale", 1.0)) * self.scale
        self.percentiles = tuple(pre.get("percentiles", DEFAULT_PERCENTILES))
        self.half = bool(half) and self.device.type != "cpu"
        if tile_overlap >= tile_size:
            raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size})")
        self.tile_size, self.tile_overlap = int(tile_size), int(tile_overlap)
        self.frame_shape = None  # (Y, X) of the movie
        self.model_shape = None  # (y, x) at the model's pixel scale
        self._states: dict = {}
        self.frames_seen = 0

    @property
    def embedding_dim(self) -> int:
        return self.model.config.embedding_dim

    def reset(self) -> None:
        """Forget the past: the next frame starts from the zero state."""
        self._states = {}
        self.frames_seen = 0
        self.frame_shape = self.model_shape = None

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """Normalise and rescale one frame to the model's input (y, x) float32."""
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise ValueError(f"a frame must be 2-D (Y, X), got shape {frame.shape}")
        return rescale_image(normalize_frame(frame, self.percentiles), self.pixel_scale)

    def push(self, frame: np.ndarray) -> np.ndarray:
        """Run one frame; returns its L2-normalised embeddings (d, y, x) float32."""
        frame = np.asarray(frame)
        if self.frame_shape is None:
            self.frame_shape = frame.shape
        elif frame.shape != self.frame_shape:
            raise ValueError(f"frame {self.frames_seen} has shape {frame.shape}, earlier frames {self.frame_shape}")
        x = self.prepare(frame)
        self.model_shape = x.shape
        out = np.empty((self.embedding_dim,) + x.shape, np.float32)
        unit = int(getattr(self.model.config, "multiple", 1) or 1)
        rows = _tiles(x.shape[0], self.tile_size, self.tile_overlap, unit)
        cols = _tiles(x.shape[1], self.tile_size, self.tile_overlap, unit)
        autocast = torch.autocast(self.device.type, dtype=torch.float16) if self.half else nullcontext()
        # New tile states are committed only once the whole frame is done: an error or a
        # cancel between tiles leaves the state at the previous frame, so pushing the frame
        # again gives exactly what an uninterrupted run gives.
        states = {}
        with torch.inference_mode(), autocast:
            for y0, y1, ky0, ky1 in rows:
                for x0, x1, kx0, kx1 in cols:
                    tile = torch.from_numpy(np.ascontiguousarray(x[y0:y1, x0:x1]))[None, None].to(self.device)
                    tile = tile.contiguous(memory_format=self.memory_format)
                    emb, states[(y0, x0)] = self.model(tile, self._states.get((y0, x0)))
                    emb = F.normalize(emb.float(), dim=1)[0].cpu().numpy()
                    out[:, ky0:ky1, kx0:kx1] = emb[:, ky0 - y0 : ky1 - y0, kx0 - x0 : kx1 - x0]
        if frame.size and frame.min() == frame.max():
            # A constant (e.g. all-zero) frame shows no cells: all background (e_0), whatever
            # the network makes of a flat input.
            out[:] = 0.0
            out[0] = 1.0
        self._states.update(states)
        self.frames_seen += 1
        return out

    def warm_up(self, movie, n_frames: int = WARMUP_FRAMES) -> int:
        """Settle the recurrent state on frame 0 before it is labelled.

        A new movie's first frame would otherwise meet the zero state, which the network only
        ever saw at the start of its training clips: on a movie it does not know, the first
        frames flooded with false cells until the state settled. Frame 0 is run
        ``n_frames`` times first (outputs dropped), as if the movie had begun with the cells
        standing still, which training clips padded with a repeated frame also show.

        Call on a fresh (or reset) stream; returns the number of frames run. On a movie the
        shipped model never saw (Fluo-C2DL-MSC/01, first 15 frames) DET on frames 0-4 went
        from 0.765 to 0.842 and LNK from 0.766 to 0.825 (docs/method.md, "First frames").
        Running frames 4..1 in reverse instead gave less there (0.809) and broke tracks at
        frame 0 on synthetic movies.
        """
        if self.frames_seen:
            raise RuntimeError("warm_up() starts a movie: call it before the first push or after reset()")
        if n_frames <= 0 or len(movie) == 0:
            return 0
        try:
            frame = movie[0]
        except ValueError:
            # An unreadable frame 0 (NaN, truncated file) is reported when its turn comes.
            return 0
        for _ in range(int(n_frames)):
            self.push(frame)
        self.frames_seen = 0
        return int(n_frames)

    # -- pause / resume --------------------------------------------------------------

    def get_state(self) -> dict:
        """The recurrent state as named CPU tensors (save with safetensors to resume later)."""
        out = {"frames_seen": torch.tensor([self.frames_seen])}
        if self.frame_shape is not None:
            out["frame_shape"] = torch.tensor(list(self.frame_shape))
        for (y0, x0), state in self._states.items():
            for k, v in state.to_dict().items():
                out[f"tile.{y0}.{x0}.{k}"] = v
        return out

    def set_state(self, data: dict) -> None:
        """Restore a state from :meth:`get_state`."""
        self._states = {}
        grouped: dict = {}
        for key, value in data.items():
            if key.startswith("tile."):
                _, y0, x0, rest = key.split(".", 3)
                grouped.setdefault((int(y0), int(x0)), {})[rest] = value
        for pos, d in grouped.items():
            self._states[pos] = RecurrentState.from_dict(d).to(self.device)
        self.frames_seen = int(data["frames_seen"][0])
        self.frame_shape = tuple(int(v) for v in data["frame_shape"]) if "frame_shape" in data else None


def embed_movie(movie, model_dir=None, device="auto", **kwargs):
    """Generator of each frame's embeddings (d, y, x) for a (T, Y, X) movie."""
    stream = EmbeddingStream(model_dir, device=device, **kwargs)
    for t in range(len(movie)):
        yield stream.push(movie[t])
