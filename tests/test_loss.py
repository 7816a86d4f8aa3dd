"""Cosine embedding loss on hand-computed small cases."""

import math

import pytest
import torch

from napari_cosine_tracker.core.loss import IGNORE, cosine_embedding_loss, neighbour_matrix


def scene():
    """Two touching cells (1, 2) and one far away (3) on background, two frames."""
    lab = torch.zeros(2, 40, 40, dtype=torch.long)
    lab[:, 4:10, 4:10] = 1
    lab[:, 10:16, 4:10] = 2
    lab[:, 30:36, 30:36] = 3
    return lab


def onehot_embedding(lab, directions):
    emb = torch.zeros(lab.shape[0], 4, *lab.shape[1:])
    for inst, axis in directions.items():
        emb[:, axis] += (lab == inst).float()
    return emb


def test_perfect_embeddings_give_zero():
    lab = scene()
    emb = onehot_embedding(lab, {0: 0, 1: 1, 2: 2, 3: 3})
    assert float(cosine_embedding_loss(emb, lab, r_n=4)) == pytest.approx(0.0, abs=1e-6)


def test_touching_instances_with_same_direction_are_penalised():
    lab = scene()
    emb = onehot_embedding(lab, {0: 0, 1: 1, 2: 1, 3: 3})
    # Cells 1 and 2 share a direction: each has two neighbours, background (cos^2 = 0) and
    # the other cell (cos^2 = 1) -> push 1/2 for both; background and cell 3 are perfect.
    # Four instances (background, 1, 2, 3): (0 + 0.5 + 0.5 + 0) / 4.
    assert float(cosine_embedding_loss(emb, lab, r_n=4)) == pytest.approx(0.25, abs=1e-6)


def test_cell_that_looks_like_background_is_penalised():
    lab = scene()
    emb = onehot_embedding(lab, {0: 0, 1: 1, 2: 2, 3: 0})
    # Cell 3 points along the background direction: its only neighbour is background (push 1);
    # background's push averages cells 1, 2 (0) and 3 (1) -> 1/3.
    assert float(cosine_embedding_loss(emb, lab, r_n=4)) == pytest.approx((1 / 3 + 1) / 4, abs=1e-6)


def test_far_apart_instances_may_share_a_direction():
    lab = scene()
    emb = onehot_embedding(lab, {0: 0, 1: 1, 2: 2, 3: 1})
    assert float(cosine_embedding_loss(emb, lab, r_n=4)) == pytest.approx(0.0, abs=1e-6)
    # ...but not when r_N reaches across the gap.
    assert float(cosine_embedding_loss(emb, lab, r_n=30)) == pytest.approx((1 / 3 + 1 / 3) / 4, abs=1e-6)


def test_background_pinned_to_first_axis():
    lab = scene()
    # Background along axis 3 instead of e_0: fully penalised although internally consistent.
    emb = onehot_embedding(lab, {0: 3, 1: 1, 2: 2, 3: 0})
    pinned = float(cosine_embedding_loss(emb, lab, r_n=4))
    learned = float(cosine_embedding_loss(emb, lab, r_n=4, background_pinned=False))
    assert pinned > 0.2 and learned == pytest.approx(0.0, abs=1e-6)


def test_pull_term_value():
    # One cell whose pixels are split between two orthogonal directions: mean at 45 degrees,
    # every pixel has cos = 1/sqrt(2); pull = 1 - 1/sqrt(2). Background perfect, no cell neighbours.
    lab = torch.zeros(1, 20, 20, dtype=torch.long)
    lab[0, 5:15, 5:15] = 1
    emb = torch.zeros(1, 3, 20, 20)
    emb[0, 0] = (lab[0] == 0).float()
    emb[0, 1, 5:15, 5:10] = 1
    emb[0, 2, 5:15, 10:15] = 1
    expected = (0 + (1 - 1 / math.sqrt(2))) / 2
    assert float(cosine_embedding_loss(emb, lab, r_n=3)) == pytest.approx(expected, abs=1e-5)


def test_ignored_pixels_teach_nothing():
    lab = scene()
    emb = onehot_embedding(lab, {0: 0, 1: 1, 2: 2, 3: 3})
    lab_ignored = lab.clone()
    lab_ignored[:, 0:3, :] = IGNORE
    emb[:, :, 0:3, :] = torch.randn(2, 4, 3, 40)  # garbage where ignored
    assert float(cosine_embedding_loss(emb, lab_ignored, r_n=4)) == pytest.approx(0.0, abs=1e-6)


def test_neighbour_matrix_uses_radius():
    lab = scene()
    onehot = torch.stack([(lab == i).float() for i in range(4)])
    near = neighbour_matrix(onehot, 4)
    assert near[1, 2] and near[2, 1] and not near[1, 3] and not near[1, 1]


def test_gradient_is_finite_and_vectorised():
    lab = scene()
    emb = torch.randn(2, 4, 40, 40, requires_grad=True)
    loss = cosine_embedding_loss(emb, lab, r_n=4)
    loss.backward()
    assert torch.isfinite(emb.grad).all()
    with pytest.raises(ValueError, match="do not match"):
        cosine_embedding_loss(emb, lab[0], r_n=4)


def test_background_weight_makes_calling_background_cell_cost_more():
    """Background called cell (all pixels on a cell's axis): with the background weighted
    like many cells that mistake costs more than with its weight of one instance; perfect
    embeddings still cost nothing."""
    lab = scene()
    wrong = onehot_embedding(lab, {0: 1, 1: 1, 2: 2, 3: 3})  # background on cell 1's axis
    one = float(cosine_embedding_loss(wrong, lab, r_n=4))
    five = float(cosine_embedding_loss(wrong, lab, r_n=4, background_weight=5.0))
    assert five > one > 0
    perfect = onehot_embedding(lab, {0: 0, 1: 1, 2: 2, 3: 3})
    assert float(cosine_embedding_loss(perfect, lab, r_n=4, background_weight=5.0)) == pytest.approx(0.0, abs=1e-6)
