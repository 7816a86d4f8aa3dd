"""Training of the recurrent stacked hourglass on CTC sequences and synthetic movies.

Clips of consecutive frames, random crops at the model's pixel scale with random zoom,
flips, 90° rotations and intensity augmentation; Adam; checkpoints (safetensors + JSON,
never pickles) and resume; seeded.

Ground truth: instances are *tracks* (TRA ids, consistent over time) so the loss also teaches
each cell to keep its direction from frame to frame. Where the TRA annotation is only a
marker (e.g. Fluo-N2DH-GOWT1), the marker (or the SEG mask where one exists) is the instance
and a ring around it is ignored, as are bright blobs without any annotation: an unlabelled
cell body must never teach "background".
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import tifffile
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from .cellsize import frames_cell_diameter
from .loss import IGNORE, cosine_embedding_loss
from .model import ModelConfig, RecurrentHourglass, load_model, save_model
from .preprocess import DEFAULT_PERCENTILES, normalize_frame, rescale_image, rescale_labels, scaled_shape

__all__ = ["TrainConfig", "TrainingSequence", "iter_train", "kept_frames", "load_ctc_sequence", "load_result_sequence",
           "sequence_from_arrays", "synthetic_sequence", "parse_synthetic", "train"]


@dataclass
class TrainConfig:
    """Training hyper-parameters (the architecture lives in :class:`ModelConfig`)."""

    pixel_scale: float = 0.5
    clip_length: int = 8
    crop: int = 128
    batch_size: int = 1
    steps: int = 2000
    max_minutes: float | None = None
    lr: float = 1e-3
    lr_final: float = 1e-4
    r_n: int = 16
    zoom: tuple = (0.8, 1.25)
    # Keep each CTC sequence's cells within this range of diameters in model pixels
    # (measured on its masks): a sequence whose cells come out of the range at
    # ``pixel_scale`` is resampled to the nearest bound. Movies of 13-px and 110-px cells then
    # teach the sizes the model is asked to segment, while cells seen at their own
    # resolution stay cheap to run. (MIN, MAX); MIN == MAX brings every sequence to one size;
    # None keeps ``pixel_scale`` for every sequence.
    cell_diameter: tuple | None = None
    dim_cells: float = 0.0
    # Fractions of clips blurred (out of focus) and given a texture (uneven staining,
    # chromatin); 0 by default so that the recorded recipes of earlier models stay exact.
    blur: float = 0.0
    texture: float = 0.0
    # Fraction of clips turned into relief images (DIC-like), see _relief.
    relief: float = 0.0
    # Weight of background in the loss against one cell's 1 (see cosine_embedding_loss).
    background_weight: float = 1.0
    holdout: float = 0.25
    seed: int = 0
    checkpoint_every: int = 100
    threads: int | None = None
    device: str = "cpu"
    init: str | None = None  # model folder to fine-tune, or "shipped"
    init_data: tuple = ()  # datasets the init model (and its own init) trained on
    teacher: str | None = None  # model folder (or "shipped") whose embeddings the model also learns
    distill_weight: float = 1.0


@dataclass
class TrainingSequence:
    """Normalised frames and instance labels at the model's pixel scale."""

    name: str
    images: np.ndarray  # (T, H, W) float32
    labels: np.ndarray  # (T, H, W) int32: track id, 0 background, -1 ignored
    frames: tuple = ()  # original frame indices
    notes: dict = field(default_factory=dict)


def _frame_index(path: Path) -> int:
    return int(re.findall(r"(\d+)", path.stem)[-1])


def _tra_is_full(tra_paths: dict, seg_paths: dict) -> tuple[bool, float]:
    """Whether TRA masks are full cell masks (simulated data) or markers, from SEG overlap.

    Looks at the annotated frames of the whole sequence, whichever frames are trained on.
    """
    ious = []
    for t, seg_path in sorted(seg_paths.items())[:10]:
        if t not in tra_paths:
            continue
        seg, tra = tifffile.imread(seg_path), tifffile.imread(tra_paths[t])
        for s in np.unique(seg)[1:]:
            m = seg == s
            ids, counts = np.unique(tra[m], return_counts=True)
            counts, ids = counts[ids > 0], ids[ids > 0]
            if len(ids):
                j = ids[np.argmax(counts)]
                ious.append(np.sum(m & (tra == j)) / np.sum(m | (tra == j)))
    mean = float(np.mean(ious)) if ious else 1.0
    return mean >= 0.75, mean


def _marker_labels(image: np.ndarray, tra: np.ndarray, seg: np.ndarray | None, ring: int,
                   seg_complete: bool = False) -> np.ndarray:
    """Instances from markers (+ SEG masks where annotated); ignore what may be unlabelled cell.

    A SEG object takes the id of the TRA marker it covers most (so identities hold over
    time); one without a marker is ignored, never background. ``seg_complete``: the SEG
    frame masks every cell (silver truth), so bright unannotated blobs are not searched for
    (brightness means nothing in DIC or phase contrast).
    """
    from skimage.filters import gaussian, threshold_otsu

    lab = tra.astype(np.int32)
    annotated = set()
    if seg is not None:
        for s in np.unique(seg)[1:]:
            m = seg == s
            ids, counts = np.unique(tra[m], return_counts=True)
            counts, ids = counts[ids > 0], ids[ids > 0]
            if len(ids):
                j = int(ids[np.argmax(counts)])
                lab[(lab == j)] = 0
                lab[m & (lab == 0)] = j
                annotated.add(j)
            else:
                lab[m & (lab == 0)] = IGNORE
    marker_only = (lab > 0) & ~np.isin(lab, list(annotated))
    near = ndi.binary_dilation(marker_only, iterations=ring) & (lab == 0)
    lab[near] = IGNORE
    if not seg_complete:
        smooth = gaussian(image.astype(np.float32), 2)
        bright = smooth > threshold_otsu(smooth)
        comp, _ = ndi.label(bright)
        touching = np.unique(comp[lab > 0])
        unlabelled = bright & ~np.isin(comp, touching)
        lab[unlabelled & (lab == 0)] = IGNORE
    return lab


def _seg_paths(gt_dir: Path) -> tuple[dict, dict]:
    """Gold (``01_GT/SEG``) and silver (``01_ST/SEG``) segmentation frames of a sequence."""
    gold = {_frame_index(p): p for p in (gt_dir / "SEG").glob("man_seg*.tif")}
    st_dir = gt_dir.with_name(gt_dir.name[:-3] + "_ST") / "SEG" if gt_dir.name.endswith("_GT") else None
    silver = {_frame_index(p): p for p in st_dir.glob("man_seg*.tif")} if st_dir and st_dir.is_dir() else {}
    return gold, silver


def sequence_cell_diameter(image_dir, gt_dir=None, n_frames: int = 6) -> float:
    """Cell diameter of a CTC sequence in its own pixels (area-weighted median, see
    :func:`.cellsize.cell_diameter`), measured on up to ``n_frames`` segmentation frames,
    gold where there is any, else silver; nan without segmentation truth."""
    image_dir = Path(image_dir)
    gt_dir = Path(gt_dir) if gt_dir is not None else image_dir.with_name(image_dir.name + "_GT")
    gold, silver = _seg_paths(gt_dir)
    paths = gold or silver
    if not paths:
        return float("nan")
    keys = sorted(paths)
    pick = [keys[i] for i in np.linspace(0, len(keys) - 1, min(n_frames, len(keys))).round().astype(int)]
    return frames_cell_diameter(tifffile.imread(paths[t]) for t in pick)


def load_ctc_sequence(image_dir, gt_dir=None, pixel_scale=0.5, frames=None, percentiles=DEFAULT_PERCENTILES):
    """Load a CTC training sequence (``01`` + ``01_GT``) at the model's pixel scale.

    ``frames``: a ``slice`` or iterable of frame indices to use (e.g. to hold frames out).
    """
    image_dir = Path(image_dir)
    gt_dir = Path(gt_dir) if gt_dir is not None else image_dir.with_name(image_dir.name + "_GT")
    images = sorted(image_dir.glob("t*.tif"), key=_frame_index)
    if not images:
        raise FileNotFoundError(f"no tTTT.tif frames in {image_dir}")
    tra_paths = {_frame_index(p): p for p in (gt_dir / "TRA").glob("man_track*.tif")}
    seg_paths, silver_paths = _seg_paths(gt_dir)
    if not tra_paths:
        raise FileNotFoundError(f"no TRA/man_trackTTT.tif in {gt_dir}: training needs tracking ground truth")
    index = list(range(len(images)))
    if frames is not None:
        index = list(range(len(images))[frames]) if isinstance(frames, slice) else list(frames)
    tra = {t: tifffile.imread(tra_paths[t]) for t in index if t in tra_paths}
    full, iou = _tra_is_full(tra_paths, seg_paths or silver_paths)
    ring = 6
    if not full and seg_paths:
        ring = 8
    imgs, labs = [], []
    for t in index:
        img = tifffile.imread(images[t]).astype(np.float32)
        if t in tra:
            if full:
                lab = tra[t].astype(np.int32)
            elif t in seg_paths:  # gold, possibly partial
                lab = _marker_labels(img, tra[t], tifffile.imread(seg_paths[t]), ring)
            elif t in silver_paths:  # silver: every cell masked
                lab = _marker_labels(img, tra[t], tifffile.imread(silver_paths[t]), ring, seg_complete=True)
            else:
                lab = _marker_labels(img, tra[t], None, ring)
        else:
            lab = np.full(img.shape, IGNORE, np.int32)
        small = scaled_shape(img.shape, pixel_scale)
        imgs.append(rescale_image(normalize_frame(img, percentiles), pixel_scale))
        labs.append(rescale_labels(lab, small))
    notes = {"tra_full_masks": full, "tra_seg_iou": round(iou, 3), "ignore_ring_px": None if full else ring,
             "pixel_scale": pixel_scale}
    if silver_paths and not full:
        notes["silver_truth_frames"] = sum(1 for t in index if t in silver_paths and t not in seg_paths)
    return TrainingSequence(
        name=f"{image_dir.parent.name}/{image_dir.name}",
        images=np.stack(imgs),
        labels=np.stack(labs),
        frames=(index[0], index[-1]),
        notes=notes,
    )


def sequence_from_arrays(images, labels, pixel_scale=0.5, name="movie", frames=None, notes=None,
                         percentiles=DEFAULT_PERCENTILES) -> TrainingSequence:
    """A training sequence from a movie and its label stack (``(T, Y, X)`` each, e.g. napari
    layers' data); every cell of every frame counts as annotated, 0 is background.

    ``frames``: a ``slice`` or iterable of frame indices to use; ``images`` may be lazy (only
    those frames are read).
    """
    if len(labels) != len(images) or tuple(labels.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"the labels ({len(labels)} frames of {tuple(labels.shape[1:])} pixels) do not "
                         f"match the movie ({len(images)} frames of {tuple(images.shape[1:])} pixels)")
    index = list(range(len(images)))
    if frames is not None:
        index = index[frames] if isinstance(frames, slice) else list(frames)
    imgs, labs = [], []
    for t in index:
        img = np.asarray(images[t]).astype(np.float32)
        imgs.append(rescale_image(normalize_frame(img, percentiles), pixel_scale))
        labs.append(rescale_labels(np.asarray(labels[t]).astype(np.int32), scaled_shape(img.shape, pixel_scale)))
    return TrainingSequence(name=name, images=np.stack(imgs), labels=np.stack(labs),
                            frames=(index[0], index[-1]), notes={"tra_full_masks": True, **(notes or {})})


def load_result_sequence(images, result_dir, pixel_scale=0.5, frames=None,
                         percentiles=DEFAULT_PERCENTILES) -> TrainingSequence:
    """Load a movie with a CTC *result* folder as its labels, e.g. tracks corrected in napari
    and exported (``maskTTT.tif`` + ``res_track.txt``): every cell of every frame counts as
    annotated, so fine-tuning on it teaches the model the corrections.

    ``images``: a CTC image folder or a (T, Y, X) TIFF; ``frames`` as in :func:`load_ctc_sequence`.
    """
    from .io import read_ctc_result, read_movie

    movie = read_movie(images)
    masks, _ = read_ctc_result(result_dir)
    if len(masks) != len(movie) or masks.shape[1:] != movie.shape[1:]:
        raise ValueError(f"{result_dir} has {len(masks)} masks of {masks.shape[1:]} pixels but {images} "
                         f"has {len(movie)} frames of {movie.shape[1:]}: give the result folder of this movie")
    return sequence_from_arrays(movie, masks, pixel_scale, name=f"{Path(images).name}={Path(result_dir).name}",
                                frames=frames, notes={"labels": str(result_dir)}, percentiles=percentiles)


def synthetic_sequence(seed=0, n_frames=24, shape=(256, 256), pixel_scale=0.5, **kwargs) -> TrainingSequence:
    """A synthetic movie with full ground truth as a training sequence."""
    from .synthetic import make_synthetic_movie

    movie = make_synthetic_movie(n_frames=n_frames, shape=shape, seed=seed, **kwargs)
    small = scaled_shape(shape, pixel_scale)
    imgs = np.stack([rescale_image(normalize_frame(f), pixel_scale) for f in movie.images])
    labs = np.stack([rescale_labels(l, small) for l in movie.labels]).astype(np.int32)
    name = f"synthetic:{seed}" + (f":{kwargs['n_cells']}" if "n_cells" in kwargs else "")
    return TrainingSequence(name, imgs, labs, (0, n_frames - 1), {"synthetic": True})


def parse_synthetic(spec: str) -> dict:
    """``synthetic[:SEED[:CELLS]]`` as keyword arguments of :func:`synthetic_sequence`.

    CELLS sets the cells of the first frame (default 10). A few cells on a large uneven
    background teach that a near-empty frame's blotches, stretched by the normalisation to
    look like dim cells, are background: on such frames every model before it found large
    false cells (docs/model.md).
    """
    parts = spec.split(":")
    if parts[0] != "synthetic" or len(parts) > 3:
        raise ValueError(f"training data {spec!r}: write synthetic, synthetic:SEED or synthetic:SEED:CELLS")
    try:
        values = [int(v) for v in parts[1:]]
    except ValueError:
        raise ValueError(f"training data {spec!r}: SEED and CELLS of synthetic:SEED:CELLS are whole "
                         "numbers, e.g. synthetic:3:2") from None
    kwargs = {"seed": values[0] if values else 0}
    if len(values) == 2:
        if values[1] < 1:
            raise ValueError(f"training data {spec!r}: CELLS must be at least 1")
        kwargs["n_cells"] = values[1]
    return kwargs


def kept_frames(n_frames: int, holdout: float) -> int:
    """How many first frames of an ``n_frames`` sequence are for training when its last
    ``holdout`` fraction is held out (at least 2: a pair)."""
    return max(2, int(math.floor(n_frames * (1.0 - holdout))))


def resolve_data(spec: str, pixel_scale: float, holdout: float,
                 cell_diameter: tuple | None = None) -> TrainingSequence:
    """``DATA`` argument of the CLI: a CTC image folder (``.../01``) or
    ``synthetic[:SEED[:CELLS]]`` (:func:`parse_synthetic`).

    ``cell_diameter``: ``(MIN, MAX)`` model pixels; a CTC sequence whose cells (measured on
    its gold or silver segmentation) come out of that range at ``pixel_scale`` is resampled
    to the nearest bound instead.
    """
    if spec.startswith("synthetic"):
        return synthetic_sequence(pixel_scale=pixel_scale, **parse_synthetic(spec))
    path = Path(spec)
    if not path.exists() and "=" in spec:
        images, result = spec.split("=", 1)
        missing = [p for p, ok in ((images, Path(images).exists()), (result, Path(result).is_dir())) if not ok]
        if missing:
            raise FileNotFoundError(f"training data {spec}: IMAGES=RESULT needs a movie (CTC image folder "
                                    f"or TIFF) and a CTC result folder; not found: {', '.join(missing)}")
        from .io import read_movie

        keep = kept_frames(len(read_movie(images)), holdout)
        return load_result_sequence(images, result, pixel_scale=pixel_scale, frames=slice(0, keep))
    if not path.is_dir():
        raise FileNotFoundError(f"training data {spec} is neither a CTC image folder, IMAGES=RESULT "
                                "nor 'synthetic[:SEED[:CELLS]]'")
    keep = kept_frames(len(list(path.glob("t*.tif"))), holdout)
    notes = {}
    if cell_diameter:
        measured = sequence_cell_diameter(path)
        if np.isfinite(measured):
            lo, hi = (float(cell_diameter[0]), float(cell_diameter[-1]))
            pixel_scale = float(np.clip(measured * pixel_scale, lo, hi)) / measured
            notes = {"cell_diameter_px": round(measured, 2)}
    seq = load_ctc_sequence(path, pixel_scale=pixel_scale, frames=slice(0, keep))
    seq.notes.update(notes)
    return seq


def _blur(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian blur of the whole clip, sigma in [0.5, 2] crop pixels: out-of-focus frames."""
    sigma = float(rng.uniform(0.5, 2.0))
    return torch.from_numpy(ndi.gaussian_filter(img.numpy(), (0, sigma, sigma), mode="reflect"))


def _texture(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Multiply the clip by a smooth random field (grain 1.5-6 px, contrast up to 60 %),
    fixed in the crop for the clip: cells whose staining is patchy -- a bright rim, bright
    chromatin over a dim nucleoplasm -- must still be one cell to the edge of their mask."""
    h, w = img.shape[-2:]
    grain = float(rng.uniform(1.5, 6.0))
    field = ndi.gaussian_filter(rng.standard_normal((h, w)), grain, mode="wrap")
    field /= field.std() + 1e-8
    field = np.exp(float(rng.uniform(0.15, 0.6)) * np.clip(field, -2.5, 2.5))
    return img * torch.from_numpy(field / field.mean()).to(img.dtype)


def _relief(img: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Turn the clip into a DIC-like relief image: the intensity's derivative along one shear
    direction (fixed for the clip) over a mid-grey background, with a little of the intensity
    kept, normalised like a movie (1st-99.8th percentile to 0-1).

    DIC shows the gradient of the optical path, so each cell is a bright edge on one side and
    a dark one on the other, on grey. None of the fluorescence or phase-contrast training
    movies look like that; this shows their cells that way, so a model can learn DIC's
    appearance without DIC masks (whose silver truth leaves cells as background).
    """
    a = img.numpy().astype(np.float32)
    sigma = float(rng.uniform(0.7, 2.0))
    smooth = ndi.gaussian_filter(a, (0, sigma, sigma))
    theta = float(rng.uniform(0, 2 * np.pi))
    d = np.cos(theta) * np.gradient(smooth, axis=2) + np.sin(theta) * np.gradient(smooth, axis=1)
    d /= d.std() + 1e-8
    out = d + float(rng.uniform(0.0, 0.5)) * (a - a.mean()) / (a.std() + 1e-8)
    lo, hi = np.percentile(out, (1.0, 99.8))
    return torch.from_numpy((out - lo) / max(hi - lo, 1e-6)).to(img.dtype)


def _dim_cells(img: torch.Tensor, lab: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Scale each cell's brightness by its own factor in [0.15, 1] (the same in every frame of
    the clip), blended over a few pixels so that no edge is drawn around the mask.

    Real movies hold nuclei far dimmer than their neighbours (a 1-99.8 % normalisation puts
    them at a few percent of the brightest); this shows the model many more of them.
    """
    ids = torch.unique(lab)
    ids = ids[ids > 0]
    if ids.numel() == 0:
        return img
    factor = torch.ones(int(ids.max()) + 1)
    factor[ids] = torch.from_numpy(np.exp(rng.uniform(np.log(0.15), 0.0, ids.numel()))).float()
    from skimage.segmentation import expand_labels

    # Grown past the mask: a cell's halo (and the unlabelled ring of marker-only ground
    # truth) dims with it, else a bright ring would be left around a dark cell.
    grown = np.stack([expand_labels(f, 6) for f in lab.clamp(min=0).numpy()])
    fmap = ndi.gaussian_filter(factor.numpy()[grown], (0, 2.0, 2.0))
    return img * torch.from_numpy(fmap).to(img.dtype)


class ClipSampler:
    """Random augmented clips (T, B, 1, c, c) with labels (T, B, c, c)."""

    def __init__(self, sequences, cfg: TrainConfig, rng: np.random.Generator):
        self.sequences = sequences
        self.cfg = cfg
        self.rng = rng
        self.weights = np.array([np.sqrt(len(s.images)) for s in sequences], float)
        self.weights /= self.weights.sum()

    def _one(self):
        cfg, rng = self.cfg, self.rng
        seq = self.sequences[rng.choice(len(self.sequences), p=self.weights)]
        t_len = min(cfg.clip_length, len(seq.images))
        t0 = rng.integers(0, len(seq.images) - t_len + 1)
        zoom = float(np.exp(rng.uniform(np.log(cfg.zoom[0]), np.log(cfg.zoom[1]))))
        h, w = seq.images.shape[1:]
        src = int(round(cfg.crop / zoom))
        best = None
        for _ in range(6):  # prefer crops that show cells
            y = rng.integers(0, max(1, h - src + 1))
            x = rng.integers(0, max(1, w - src + 1))
            lab = seq.labels[t0 : t0 + t_len, y : y + src, x : x + src]
            score = np.mean(lab > 0)
            if best is None or score > best[0]:
                best = (score, y, x)
            if score > 0.08:
                break
        _, y, x = best
        img = torch.from_numpy(seq.images[t0 : t0 + t_len, y : y + src, x : x + src].copy())[:, None]
        lab = torch.from_numpy(seq.labels[t0 : t0 + t_len, y : y + src, x : x + src].copy())[:, None].float()
        # Pad crops of small images up to the source size (ignored pixels).
        ph, pw = src - img.shape[-2], src - img.shape[-1]
        if ph > 0 or pw > 0:
            img = torch.nn.functional.pad(img, (0, max(pw, 0), 0, max(ph, 0)))
            lab = torch.nn.functional.pad(lab, (0, max(pw, 0), 0, max(ph, 0)), value=IGNORE)
        img = torch.nn.functional.interpolate(img, size=(cfg.crop, cfg.crop), mode="bilinear", align_corners=False)
        lab = torch.nn.functional.interpolate(lab, size=(cfg.crop, cfg.crop), mode="nearest")
        img, lab = img[:, 0], lab[:, 0].long()
        k = int(rng.integers(4))
        img, lab = torch.rot90(img, k, (1, 2)), torch.rot90(lab, k, (1, 2))
        if rng.random() < 0.5:
            img, lab = img.flip(2), lab.flip(2)
        if rng.random() < cfg.dim_cells:
            img = _dim_cells(img, lab, rng)
        # Drawn only when asked for: earlier recipes draw the same random numbers as before.
        if cfg.texture and rng.random() < cfg.texture:
            img = _texture(img, rng)
        if cfg.blur and rng.random() < cfg.blur:
            img = _blur(img, rng)
        if cfg.relief and rng.random() < cfg.relief:
            img = _relief(img, rng)
        # Intensity: gamma, contrast, offset and noise, the same for the whole clip.
        gamma = float(np.exp(rng.uniform(-0.4, 0.4)))
        img = img.clamp(min=0) ** gamma
        img = img * float(rng.uniform(0.6, 1.4)) + float(rng.uniform(-0.15, 0.15))
        img = img + float(rng.uniform(0, 0.06)) * torch.randn_like(img)
        if t_len < cfg.clip_length:  # short sequences: repeat the last frame, labels ignored
            pad = cfg.clip_length - t_len
            img = torch.cat([img, img[-1:].expand(pad, -1, -1)])
            lab = torch.cat([lab, torch.full_like(lab[-1:], IGNORE).expand(pad, -1, -1)])
        return img, lab

    def sample(self):
        pairs = [self._one() for _ in range(self.cfg.batch_size)]
        img = torch.stack([p[0] for p in pairs], 1)[:, :, None]  # (T, B, 1, c, c)
        lab = torch.stack([p[1] for p in pairs], 1)  # (T, B, c, c)
        return img, lab


#: Teaching a model a new kind of movie from a few corrected frames (the widget's *Fine-tune
#: on these cells*, benchmarks/teach.py): three synthetic movies beside the user's frames so
#: the model keeps separating neighbours, and a low learning rate. Measured on DIC-C2DH-HeLa
#: (docs/model.md, "Teaching"): at 3e-4 with one synthetic movie the taught model merged
#: touching cells (DET 0.518 -> 0.509, LNK 0.455 -> 0.090); at 1e-4 with three, DET 0.563,
#: TRA 0.544, SEG 0.102 -> 0.236 on the frames it did not see.
TEACH_DATA = ("synthetic:1", "synthetic:2", "synthetic:3")
TEACH_LR = 1e-4


def teaching_config(init, steps: int = 1_000_000, n_frames: int = 6, device: str = "cpu",
                    max_minutes: float | None = None, lr: float = TEACH_LR,
                    cell_diameter=None) -> TrainConfig:
    """The :class:`TrainConfig` of the teaching recipe (see :data:`TEACH_DATA`)."""
    return TrainConfig(init=str(init), steps=int(steps), max_minutes=max_minutes,
                       clip_length=min(6, int(n_frames)), crop=128, batch_size=1, lr=lr,
                       lr_final=lr / 10, holdout=0.0, device=device,
                       checkpoint_every=max(50, int(steps) // 4) if steps < 1_000_000 else 100,
                       cell_diameter=cell_diameter)


def clip_loss(model: RecurrentHourglass, img: torch.Tensor, lab: torch.Tensor, r_n: int,
              teacher: RecurrentHourglass | None = None, distill_weight: float = 1.0,
              background_weight: float = 1.0) -> torch.Tensor:
    """Run a clip through the recurrent model and sum the loss of every stack.

    With a ``teacher`` (a trained model with as many stacks and embedding dimensions), each
    stack's embeddings are also pulled towards the teacher stack's, pixel by pixel:
    ``distill_weight * mean(1 - cos(e_p, t_p))``. The ground-truth loss only constrains
    angles between instances; the teacher's directions are a dense target everywhere, which
    lets a new architecture learn from far fewer clips (knowledge distillation).
    """
    state, t_state = None, None
    per_stack = [[] for _ in range(model.config.stacks)]
    per_teacher = [[] for _ in range(model.config.stacks)]
    for f in range(img.shape[0]):
        outputs, state = model.forward_all(img[f], state)
        for k, out in enumerate(outputs):
            per_stack[k].append(out)
        if teacher is not None:
            with torch.no_grad():
                t_outputs, t_state = teacher.forward_all(img[f], t_state)
            for k, out in enumerate(t_outputs):
                per_teacher[k].append(out)
    total = 0.0
    for k, outs in enumerate(per_stack):
        emb = torch.stack(outs, 0)  # (T, B, d, c, c)
        for b in range(emb.shape[1]):
            total = total + cosine_embedding_loss(emb[:, b], lab[:, b], r_n,
                                                  background_weight=background_weight) / emb.shape[1]
        if teacher is not None:
            target = torch.stack(per_teacher[k], 0)
            total = total + distill_weight * (1.0 - F.cosine_similarity(emb, target, dim=2)).mean()
    return total


def _load_named_model(name: str):
    """``load_model`` of a model folder, or of the packaged model for ``"shipped"``."""
    return load_model(None if name == "shipped" else name)


def load_teacher(name: str, pixel_scale: float, model_config: ModelConfig, device) -> RecurrentHourglass:
    """The frozen model of ``--teacher`` (a model folder or ``"shipped"``), checked to fit."""
    teacher, config = _load_named_model(name)
    t_scale = float(config.get("preprocessing", {}).get("pixel_scale", pixel_scale))
    tc = teacher.config
    if t_scale != pixel_scale or tc.stacks != model_config.stacks or tc.embedding_dim != model_config.embedding_dim:
        raise ValueError(
            f"teacher {name!r} does not fit: it has pixel scale {t_scale}, {tc.stacks} stacks and "
            f"{tc.embedding_dim} embedding dimensions; the model trained has {pixel_scale}, "
            f"{model_config.stacks} and {model_config.embedding_dim}")
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


# -- checkpoints: safetensors + JSON, never pickles ------------------------------------


def _save_checkpoint(ckpt_dir: Path, model, optimizer, step: int, extra: dict):
    from safetensors.torch import save_file

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    opt_state = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for idx, st in opt_state["state"].items():
        for name, value in st.items():
            tensors[f"optim.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().reshape(-1) if name == "step" else value.detach().cpu().contiguous()
    meta = {"step": step, "param_groups": opt_state["param_groups"], **extra}
    save_file(tensors, str(ckpt_dir / ".checkpoint.safetensors.tmp"))
    (ckpt_dir / ".checkpoint.json.tmp").write_text(json.dumps(meta, default=str))
    (ckpt_dir / ".checkpoint.safetensors.tmp").replace(ckpt_dir / "checkpoint.safetensors")
    (ckpt_dir / ".checkpoint.json.tmp").replace(ckpt_dir / "checkpoint.json")


def _load_checkpoint(ckpt_dir: Path, model, optimizer) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(ckpt_dir / "checkpoint.safetensors"))
    meta = json.loads((ckpt_dir / "checkpoint.json").read_text())
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value.reshape(()) if name == "step" else value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta


def train(data: list, out_dir, model_config: ModelConfig | None = None, cfg: TrainConfig | None = None,
          **kwargs) -> Path:
    """Train a model on ``data`` (CTC image folders, ``synthetic[:SEED]`` specs or
    :class:`TrainingSequence` objects) and write it to ``out_dir``.

    Arguments (``resume``, ``progress``, ``command`` too) as for :func:`iter_train`, which
    this runs to the end. Returns the model folder (``weights.safetensors`` +
    ``config.json`` + ``loss.csv``).
    """
    for _ in iter_train(data, out_dir, model_config, cfg, **kwargs):
        pass
    return Path(out_dir)


def iter_train(
    data: list,
    out_dir,
    model_config: ModelConfig | None = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> Iterator[tuple[int, float]]:
    """Train step by step, yielding ``(step, loss)`` after each step (for a GUI's progress).

    Stopping early (``close()`` on the generator, e.g. after leaving a loop over it) saves the
    model and a checkpoint as they are, so a cancelled run keeps what it learnt.

    ``cfg.init`` names a model folder to fine-tune (``"shipped"``: the packaged model): its
    weights are the starting point, and its architecture and pixel scale replace
    ``model_config`` and ``cfg.pixel_scale``; the optimizer and learning-rate schedule start
    afresh.
    """
    cfg = cfg or TrainConfig()
    model_config = model_config or ModelConfig()
    start_model, init_clustering = None, None
    if cfg.init:
        # The architecture comes from the init model even when resuming, so a resumed
        # fine-tune needs no architecture flags; its weights are overwritten by the checkpoint.
        start_model, init_config = _load_named_model(cfg.init)
        model_config = start_model.config
        cfg = replace(cfg, pixel_scale=float(init_config.get("preprocessing", {}).get("pixel_scale", cfg.pixel_scale)))
        # Until re-tuned, the fine-tuned model recommends the init model's clustering.
        init_clustering = init_config.get("clustering")
        # What the starting weights already learnt from, so no one scores the new model on it.
        init_tr = init_config.get("training", {})
        init_data = sorted({d.get("name", "") for d in init_tr.get("data", [])} | set(init_tr.get("init_data", [])))
        cfg = replace(cfg, init_data=tuple(init_data))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)

    sequences = [d if isinstance(d, TrainingSequence)
                 else resolve_data(str(d), cfg.pixel_scale, cfg.holdout, cfg.cell_diameter) for d in data]
    if not sequences:
        raise ValueError("no training data given")
    # The cell size the model learns, so estimate_scale can bring new movies to it.
    cell_diameter = frames_cell_diameter(lab for s in sequences for lab in s.labels)
    device = torch.device(cfg.device)
    model = (start_model or RecurrentHourglass(model_config)).to(device).train()
    teacher = load_teacher(cfg.teacher, cfg.pixel_scale, model.config, device) if cfg.teacher else None
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt_dir = out_dir / "checkpoint"
    step, elapsed_before = 0, 0.0
    loss_log = out_dir / "loss.csv"
    if resume and (ckpt_dir / "checkpoint.json").exists():
        meta = _load_checkpoint(ckpt_dir, model, optimizer)
        step, elapsed_before = meta["step"], meta.get("elapsed_s", 0.0)
        rng = np.random.default_rng([cfg.seed, step])
        if loss_log.exists():  # drop steps logged after the checkpoint: they are redone
            lines = loss_log.read_text().splitlines()
            kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) <= step]
            loss_log.write_text("\n".join(kept) + "\n")
    elif loss_log.exists():
        loss_log.unlink()
    sampler = ClipSampler(sequences, cfg, rng)

    def lr_at(s):
        # Cosine decay from lr to lr_final over the steps, or over the wall-time budget when
        # that runs out first, so a time-limited run still ends at a low learning rate.
        progress = s / max(1, cfg.steps)
        if cfg.max_minutes:
            progress = max(progress, extra()["elapsed_s"] / (60 * cfg.max_minutes))
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * min(1.0, progress)))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="clip")
    start = time.perf_counter()
    ema = None
    extra = lambda: {"elapsed_s": elapsed_before + time.perf_counter() - start}  # noqa: E731
    try:
        with open(loss_log, "a", newline="") as fh:
            writer = csv.writer(fh)
            if step == 0:
                writer.writerow(["step", "loss", "elapsed_s"])
            while step < cfg.steps:
                if cfg.max_minutes is not None and (elapsed_before + time.perf_counter() - start) > 60 * cfg.max_minutes:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step)
                img, lab = sampler.sample()
                loss = clip_loss(model, img.to(device), lab.to(device), cfg.r_n, teacher, cfg.distill_weight,
                                 cfg.background_weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                step += 1
                value = float(loss.detach())
                ema = value if ema is None else 0.95 * ema + 0.05 * value
                writer.writerow([step, f"{value:.5f}", f"{extra()['elapsed_s']:.1f}"])
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{ema:.4f}")
                if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                    fh.flush()
                    _save_checkpoint(ckpt_dir, model, optimizer, step, extra())
                    _write_model(model, out_dir, cfg, sequences, step, extra()["elapsed_s"], command,
                                 init_clustering, cell_diameter)
                yield step, value
    finally:  # also when the caller stops early: keep what was learnt
        if bar is not None:
            bar.close()
        _save_checkpoint(ckpt_dir, model, optimizer, step, extra())
        _write_model(model, out_dir, cfg, sequences, step, extra()["elapsed_s"], command, init_clustering,
                     cell_diameter)


def _write_model(model, out_dir, cfg, sequences, step, elapsed, command, clustering=None,
                 cell_diameter=float("nan")):
    meta = {
        "preprocessing": {"pixel_scale": cfg.pixel_scale, "percentiles": list(DEFAULT_PERCENTILES)},
        "background": "pinned to e_0: foreground is embedding[0] < threshold",
        "training": {
            "config": asdict(cfg),
            "data": [{"name": s.name, "frames": list(s.frames), **s.notes} for s in sequences],
            "init_data": list(cfg.init_data),
            "steps": step,
            "wall_time_s": round(elapsed, 1),
            "torch_threads": torch.get_num_threads(),
            "command": command,
        },
    }
    if np.isfinite(cell_diameter):
        meta["preprocessing"]["cell_diameter"] = round(cell_diameter, 2)
    if cfg.cell_diameter:
        # The sizes the model learnt: the size estimate only brings a movie's cells into them.
        meta["preprocessing"]["cell_diameter_range"] = [float(cfg.cell_diameter[0]),
                                                        float(cfg.cell_diameter[-1])]
    if clustering:
        meta["clustering"] = clustering
    existing = out_dir / "config.json"
    if existing.exists():
        try:
            old = json.loads(existing.read_text())
            if "clustering" in old:
                meta["clustering"] = old["clustering"]
        except json.JSONDecodeError:
            pass
    was_training = model.training
    save_model(model.eval(), out_dir, meta)
    model.train(was_training)


def add_arguments(parser) -> None:
    """Arguments of ``napari-cosine-tracker train`` (shared with ``python -m ...core.train``)."""
    parser.add_argument("data", nargs="+", help="CTC image folders (e.g. .../Fluo-N2DH-SIM+/01, GT in 01_GT), "
                        "IMAGES=RESULT (a movie and a CTC result folder of it, e.g. corrected in napari "
                        "and exported) or synthetic[:SEED[:CELLS]] (CELLS: cells of the first "
                        "frame, default 10)")
    parser.add_argument("-o", "--output", required=True, help="model folder to write (weights.safetensors, config.json, loss.csv)")
    d, m = TrainConfig(), ModelConfig()
    parser.add_argument("--filters", type=int, default=m.filters, help="filters per level (paper: 64)")
    parser.add_argument("--levels", type=int, default=m.levels, help="hourglass levels (paper: 7)")
    parser.add_argument("--stacks", type=int, default=m.stacks, help="stacked hourglasses (paper: 2)")
    parser.add_argument("--embedding-dim", type=int, default=m.embedding_dim, help="embedding size d (paper: 16)")
    parser.add_argument("--space-to-depth", type=int, default=m.space_to_depth,
                        help="run the network on FxF pixel blocks stacked as channels (1: off)")
    parser.add_argument("--pixel-scale", type=float, default=d.pixel_scale, help="resample frames by this factor (0.5: half resolution)")
    parser.add_argument("--clip-length", type=int, default=d.clip_length, help="consecutive frames per clip (paper: 8)")
    parser.add_argument("--crop", type=int, default=d.crop, help="crop size in model pixels")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--max-minutes", type=float, default=None, help="stop after this much wall time")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--lr-final", type=float, default=d.lr_final, help="learning rate at the end of the cosine decay")
    parser.add_argument("--r-n", type=int, default=d.r_n, help="neighbourhood radius of the loss, model pixels")
    parser.add_argument("--cell-diameter", type=float, nargs="+", default=None, metavar="PX",
                        help="MIN [MAX]: model pixels; a CTC sequence whose cells (measured on its gold "
                             "or silver masks) fall outside MIN..MAX at --pixel-scale is resampled to "
                             "the nearest bound (one value: every sequence to that size)")
    parser.add_argument("--zoom", type=float, nargs=2, default=d.zoom, metavar=("MIN", "MAX"),
                        help="random resize range of the training crops (cell-size augmentation)")
    parser.add_argument("--dim-cells", type=float, default=d.dim_cells,
                        help="fraction of clips in which each cell is dimmed by its own factor in [0.15, 1]")
    parser.add_argument("--blur", type=float, default=d.blur,
                        help="fraction of clips blurred (sigma 0.5-2 px): out-of-focus frames")
    parser.add_argument("--texture", type=float, default=d.texture,
                        help="fraction of clips multiplied by a smooth random field: patchy "
                             "staining, bright chromatin over dim nucleoplasm")
    parser.add_argument("--relief", type=float, default=d.relief,
                        help="fraction of clips turned into DIC-like relief images (the "
                             "intensity's derivative along one direction, on grey)")
    parser.add_argument("--background-weight", type=float, default=d.background_weight,
                        help="weight of background in the loss against one cell's 1 (1: background "
                             "is one instance among the clip's cells)")
    parser.add_argument("--holdout", type=float, default=d.holdout, help="fraction of each CTC sequence's last frames kept out of training")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    parser.add_argument("--init", default=None, metavar="MODEL_DIR",
                        help="fine-tune this model folder ('shipped': the model in the package) on DATA: its "
                             "weights, architecture, pixel scale and clustering are the starting point")
    parser.add_argument("--teacher", default=None, metavar="MODEL_DIR",
                        help="also learn this model's embeddings pixel by pixel ('shipped': the packaged "
                             "model), e.g. to train a faster architecture from fewer clips")
    parser.add_argument("--distill-weight", type=float, default=d.distill_weight,
                        help="weight of the teacher term against the cosine embedding loss")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)


def run_from_args(args, command: str | None = None) -> Path:
    from .devices import resolve_device

    model_config = ModelConfig(filters=args.filters, levels=args.levels, stacks=args.stacks,
                               embedding_dim=args.embedding_dim, space_to_depth=args.space_to_depth)
    cfg = TrainConfig(
        pixel_scale=args.pixel_scale, clip_length=args.clip_length, crop=args.crop, batch_size=args.batch_size,
        steps=args.steps, max_minutes=args.max_minutes, lr=args.lr, lr_final=args.lr_final, r_n=args.r_n, dim_cells=args.dim_cells,
        blur=args.blur, texture=args.texture, relief=args.relief, holdout=args.holdout,
        background_weight=args.background_weight,
        cell_diameter=tuple(args.cell_diameter) if args.cell_diameter else None, zoom=tuple(args.zoom),
        seed=args.seed, threads=args.threads, device=str(resolve_device(args.device)),
        checkpoint_every=args.checkpoint_every, init=str(args.init) if args.init else None,
        teacher=str(args.teacher) if args.teacher else None, distill_weight=args.distill_weight,
    )
    return train(args.data, args.output, model_config, cfg, resume=args.resume, command=command)


if __name__ == "__main__":
    import argparse
    import shlex
    import sys

    parser = argparse.ArgumentParser(prog="python -m napari_cosine_tracker.core.train")
    add_arguments(parser)
    run_from_args(parser.parse_args(), command=shlex.join(["python", "-m", "napari_cosine_tracker.core.train", *sys.argv[1:]]))
