"""Recurrent stacked hourglass: shapes, recurrent state, gradients through time, safe IO."""

import json

import pytest
import torch

from napari_cosine_tracker.core.model import (
    ModelConfig,
    ModelError,
    RecurrentHourglass,
    RecurrentState,
    load_model,
    save_model,
)

TINY = ModelConfig(filters=8, levels=3, stacks=2, embedding_dim=4)
TINY_BLOCKS = ModelConfig(filters=8, levels=3, stacks=2, embedding_dim=4, space_to_depth=2)


@pytest.fixture(params=[TINY, TINY_BLOCKS], ids=["full", "space_to_depth"])
def model(request):
    torch.manual_seed(0)
    return RecurrentHourglass(request.param).eval()


@pytest.mark.parametrize("shape", [(32, 32), (37, 50), (5, 7)])
def test_shapes_any_frame_size(model, shape):
    c = model.config
    x = torch.rand(2, 1, *shape)
    emb, state = model(x)
    assert emb.shape == (2, c.embedding_dim) + shape
    assert len(state.tensors) == c.levels * c.stacks
    assert state.frames_seen == 1
    # Every ConvGRU state has its input's size: the padded frame at level 0 (in blocks of
    # space_to_depth pixels), halved below.
    assert state.tensors[0].shape[-2:] == tuple((s + (-s) % c.multiple) // c.space_to_depth for s in shape)
    assert state.tensors[0].shape[1] == c.filters
    assert state.tensors[1].shape[-1] * 2 == state.tensors[0].shape[-1]


def test_space_to_depth_embeds_every_pixel():
    # Each pixel of a block gets its own embedding: a bright pixel changes its own block's
    # outputs differently from its neighbours'.
    torch.manual_seed(1)
    m = RecurrentHourglass(TINY_BLOCKS).eval()
    x = torch.zeros(1, 1, 16, 16)
    y = x.clone()
    y[0, 0, 8, 8] = 1.0
    with torch.inference_mode():
        d = (m(y)[0] - m(x)[0]).abs().sum(1)[0]
    block = d[8:10, 8:10]
    assert block.min() > 0 and len(set(block.flatten().tolist())) == 4


def test_output_depends_on_previous_frame_through_state(model):
    a, b, c = (torch.rand(1, 1, 32, 32) for _ in range(3))
    with torch.no_grad():
        _, s_a = model(a)
        _, s_b = model(b)
        out_after_a, _ = model(c, s_a)
        out_after_b, _ = model(c, s_b)
        out_fresh, _ = model(c)
        # Same frame, same (zero) state: same output.
        again, _ = model(c, model.initial_state())
    assert not torch.allclose(out_after_a, out_after_b)
    assert not torch.allclose(out_after_a, out_fresh)
    assert torch.allclose(out_fresh, again)


def test_state_round_trip_resumes_exactly(model, tmp_path):
    from safetensors.torch import load_file, save_file

    frames = [torch.rand(1, 1, 24, 40) for _ in range(4)]
    with torch.no_grad():
        state = None
        for f in frames[:2]:
            _, state = model(f, state)
        save_file(state.to_dict(), str(tmp_path / "state.safetensors"))
        straight = state
        for f in frames[2:]:
            out_straight, straight = model(f, straight)
        resumed = RecurrentState.from_dict(load_file(str(tmp_path / "state.safetensors")))
        assert resumed.frames_seen == 2
        for f in frames[2:]:
            out_resumed, resumed = model(f, resumed)
    assert torch.allclose(out_straight, out_resumed)


def test_gradients_flow_through_time(model):
    model.train()
    first = torch.rand(1, 1, 32, 32, requires_grad=True)
    second = torch.rand(1, 1, 32, 32)
    _, state = model(first)
    out, _ = model(second, state)
    out.sum().backward()
    assert first.grad is not None and first.grad.abs().sum() > 0
    gru = model.stacks[0].grus[0]
    # the state half of the gate weights learns from the previous frame
    grad = gru.conv_zr.weight.grad[:, gru.channels :]
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inference_path_matches_training_path(model, memory_format):
    # Without autograd the activations are fused into oneDNN's convolutions and the GRU
    # reuses its concatenation in place: same numbers.
    model.to(memory_format=memory_format)
    frames = [torch.rand(1, 1, 40, 24).contiguous(memory_format=memory_format) for _ in range(3)]
    fused = plain = None
    for f in frames:
        before = None if fused is None else [t.clone() for t in fused.tensors]
        with torch.inference_mode():
            out_fused, fused_next = model(f, fused)
        if before is not None:  # the inference path works in place, never on the state it was given
            assert all(torch.equal(a, b) for a, b in zip(before, fused.tensors))
        fused = fused_next
        with torch.enable_grad():
            out_plain, plain = model(f, plain)
        assert torch.allclose(out_fused, out_plain.detach(), atol=1e-5)


def test_packed_weights_follow_training_and_are_freed_with_the_model():
    import gc

    from napari_cosine_tracker.core import model as model_module

    torch.manual_seed(0)
    model = RecurrentHourglass(TINY_BLOCKS).eval()
    frame = torch.rand(1, 1, 32, 32)
    with torch.inference_mode():
        before, _ = model(frame)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    out, _ = model.forward_all(frame)
    sum(o.square().mean() for o in out).backward()
    optimizer.step()  # in place: the inference path must not keep the old packed weights
    with torch.inference_mode():
        after, _ = model(frame)
        other = RecurrentHourglass(model.config).eval()
        other.load_state_dict(model.state_dict())
        plain, _ = other(frame)
    assert not torch.allclose(before, after, atol=1e-3)
    assert torch.allclose(after, plain, atol=1e-5)

    # A fused optimizer writes the weights without bumping their version: train() / eval()
    # around it (as every training loop has) drop the packed copies.
    fused = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
    model.train()
    out, _ = model.forward_all(frame)
    sum(o.square().mean() for o in out).backward()
    fused.step()
    model.eval()
    with torch.inference_mode():
        after_fused, _ = model(frame)
        other.load_state_dict(model.state_dict())
        plain, _ = other(frame)
    assert not torch.allclose(after, after_fused, atol=1e-3)
    assert torch.allclose(after_fused, plain, atol=1e-5)

    packed = [id(p) for p in model.parameters() if id(p) in model_module._PACKED]
    assert len(packed) == sum(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    del model, other, optimizer, fused, out, before, after, after_fused, plain
    gc.collect()
    assert not set(packed) & set(model_module._PACKED)


def test_models_saved_with_separate_gate_convolutions_still_load(model, tmp_path):
    # Earlier models stored x -> (z, r, n), h -> (z, r) and r*h -> n as three convolutions.
    old = {}
    for key, value in model.state_dict().items():
        prefix, _, name = key.rpartition(".conv_")
        c = TINY.filters
        if name == "zr.weight":
            old[prefix + ".conv_h.weight"] = value[:, c:]
            old.setdefault(prefix + ".conv_x.weight", [None, None])[0] = value[:, :c]
        elif name == "zr.bias":
            old.setdefault(prefix + ".conv_x.bias", [None, None])[0] = value
        elif name == "n.weight":
            old[prefix + ".conv_hn.weight"] = value[:, c:]
            old.setdefault(prefix + ".conv_x.weight", [None, None])[1] = value[:, :c]
        elif name == "n.bias":
            old.setdefault(prefix + ".conv_x.bias", [None, None])[1] = value
        else:
            old[key] = value
    old = {k: torch.cat(v).contiguous() if isinstance(v, list) else v.contiguous() for k, v in old.items()}
    from safetensors.torch import save_file

    save_model(model, tmp_path / "m")
    save_file(old, str(tmp_path / "m" / "weights.safetensors"))
    loaded, _ = load_model(tmp_path / "m")
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x)[0], loaded(x)[0])


def test_save_load_round_trip(model, tmp_path):
    save_model(model, tmp_path / "m", {"preprocessing": {"pixel_scale": 0.5}})
    loaded, config = load_model(tmp_path / "m")
    assert config["architecture"]["filters"] == TINY.filters
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], loaded(x)[0])


def test_bad_model_folders_give_clear_errors(model, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    folder = save_model(model, tmp_path / "m")
    weights = folder / "weights.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        load_model(folder)
    save_model(model, folder)
    config = json.loads((folder / "config.json").read_text())
    config["architecture"]["filters"] = 16
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="does not match"):
        load_model(folder)
    weights.unlink()
    torch.save(model.state_dict(), folder / "weights.pt")
    with pytest.raises(ModelError, match="pickled weights are never loaded"):
        load_model(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(folder)


def test_config_validation():
    with pytest.raises(ModelError, match="filters"):
        ModelConfig(filters=0)
    with pytest.raises(ModelError, match="unknown architecture keys"):
        ModelConfig.from_dict({"filters": 8, "colour": 3})
    with pytest.raises(ModelError, match=r"\(B, 1, H, W\)"):
        RecurrentHourglass(TINY)(torch.rand(1, 32, 32))


def test_paper_configuration_is_one_option_away():
    paper = RecurrentHourglass(ModelConfig(filters=64, levels=7, stacks=2, embedding_dim=16))
    n = sum(p.numel() for p in paper.parameters())
    assert 3e6 < n < 6e6  # ~4 M parameters, as the paper-size network
