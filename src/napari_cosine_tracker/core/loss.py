"""Cosine embedding loss (Payer et al. 2018, eq. 1), vectorised over pixels.

For each instance i of a clip (all frames together: an instance is one track) with pixels S(i)
and mean embedding ē(i):

    L = 1/|I| Σ_i [ (1 − mean_{p∈S(i)} cos(ē(i), e_p)) + mean_{p∈N(i)} cos(ē(i), e_p)² ]

where N(i) holds the pixels of the instances that come within ``r_n`` pixels of i in some
frame of the clip, background included (it touches every cell). The mean over N(i) is taken
per neighbouring instance (each neighbour's pixel mean, then the mean over neighbours):
background outnumbers a cell's other neighbours so much in pixels that a plain pixel mean
would dilute the push between touching cells to almost nothing. Far-apart instances are not pushed apart, so a few directions suffice
(four-colour argument).

Background handling: background is one more instance, but its mean is *pinned* to the fixed
direction e_0 = (1, 0, …, 0) instead of learned (the authors' later version). Every cell is a
neighbour of background, so cells are pushed orthogonal to e_0 and at inference the foreground
is read off one component: ``emb[0] < threshold``.

Pixels labelled ``-1`` are ignored (e.g. around cells that the ground truth marks only by a
marker, so an unlabelled cell body never teaches "background").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cosine_embedding_loss", "neighbour_matrix", "IGNORE"]

IGNORE = -1


def neighbour_matrix(onehot: torch.Tensor, r_n: int) -> torch.Tensor:
    """(K, K) boolean: instance j comes within ``r_n`` pixels of instance i in some frame.

    ``onehot``: (K, T, H, W) float masks. Dilation by a square max-pool of side 2 r_n + 1
    (Chebyshev distance: a close, cheap stand-in for Euclidean distance at this scale).
    """
    k = onehot.shape[0]
    t, h, w = onehot.shape[1:]
    masks = onehot.reshape(k * t, 1, h, w)
    # Coarsen by 4 first (a max-pool keeps every instance present): the dilation is then 16x
    # cheaper and r_n is only a rough radius anyway. The square pool is done as two 1-D pools.
    f = 4 if min(h, w) >= 32 and r_n >= 8 else 1
    if f > 1:
        masks = F.max_pool2d(masks, f, ceil_mode=True)
    r = max(1, round(r_n / f))
    size = 2 * r + 1
    dilated = F.max_pool2d(masks, (1, size), stride=1, padding=(0, r))
    dilated = F.max_pool2d(dilated, (size, 1), stride=1, padding=(r, 0)).reshape(k, -1)
    onehot = masks.reshape(k, -1)
    near = (dilated @ onehot.T) > 0
    near.fill_diagonal_(False)
    return near


def cosine_embedding_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, r_n: int = 16, background_pinned: bool = True,
    background_weight: float = 1.0,
) -> torch.Tensor:
    """Cosine embedding loss of one clip.

    Parameters
    ----------
    embeddings : (T, d, H, W) float tensor
        Raw (un-normalised) network outputs for T frames.
    labels : (T, H, W) integer tensor
        Instance (track) ids, consistent across frames; 0 is background, -1 is ignored.
    r_n : int
        Neighbourhood radius in pixels.
    background_pinned : bool
        Pin the background mean to e_0 (see module docstring) instead of learning it.
    background_weight : float
        Weight of the background instance's terms against a cell's 1 (the mean over
        instances becomes a weighted mean). With 1, background is one instance among the
        clip's many: on DIC, where background looks like cell, a model that calls almost
        every pixel cell had the lower loss (0.35 against 0.55 on DIC clips; docs/model.md).

    Returns
    -------
    Scalar loss; 0 for perfect embeddings.
    """
    if embeddings.ndim != 4 or labels.shape != (embeddings.shape[0],) + embeddings.shape[2:]:
        raise ValueError(
            f"embeddings (T, d, H, W) and labels (T, H, W) do not match: {tuple(embeddings.shape)} vs {tuple(labels.shape)}"
        )
    t, d, h, w = embeddings.shape
    e = F.normalize(embeddings, dim=1).permute(1, 0, 2, 3).reshape(d, -1)  # (d, P)
    flat = labels.reshape(-1).long()
    valid = flat != IGNORE
    ids, inverse = torch.unique(flat, return_inverse=True)  # ids sorted: -1 (if any), 0, ...
    k = ids.numel()
    onehot = F.one_hot(inverse, k).T.to(e.dtype) * valid.to(e.dtype)  # (K, P), ignored pixels in no instance
    keep = (ids != IGNORE) & (onehot.sum(1) > 0)
    onehot, ids = onehot[keep], ids[keep]
    k = ids.numel()
    if k == 0:
        return embeddings.sum() * 0.0
    counts = onehot.sum(1)  # (K,)

    means = F.normalize(onehot @ e.T, dim=1)  # (K, d)
    is_bg = ids == 0
    if background_pinned and bool(is_bg.any()):
        pinned = torch.zeros_like(means)
        pinned[:, 0] = 1.0
        means = torch.where(is_bg[:, None], pinned, means)

    cos = means @ e  # (K, P): cosine of every pixel to every instance mean
    own = (cos * onehot).sum(1) / counts  # mean cosine to own mean
    pull = 1.0 - own

    with torch.no_grad():
        near = neighbour_matrix(onehot.reshape(k, t, h, w), r_n)
        if bool(is_bg.any()):
            # Background touches every cell, whatever the crop shows.
            near[is_bg, :] = True
            near[:, is_bg] = True
            near.fill_diagonal_(False)
    # Push, averaged per neighbouring *instance* (each neighbour's pixels first): background
    # outnumbers a cell's other neighbours by far in pixels, and a plain pixel mean over N(i)
    # would dilute the push between touching cells to almost nothing.
    sq = (cos * cos) @ onehot.T / counts[None, :]  # (K, K): mean_{p∈S(j)} cos(ē_i, e_p)²
    near_f = near.to(e.dtype)
    push = (sq * near_f).sum(1) / near_f.sum(1).clamp(min=1.0)
    if background_weight == 1.0 or not bool(is_bg.any()):
        return (pull + push).mean()
    weight = torch.where(is_bg, torch.full_like(pull, float(background_weight)), torch.ones_like(pull))
    return ((pull + push) * weight).sum() / weight.sum()
