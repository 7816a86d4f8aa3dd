"""Recurrent stacked hourglass network (Payer et al. 2018, arXiv 1806.02070).

A U-Net-like hourglass whose parallel skip paths are ConvGRUs. Each ConvGRU keeps a state of
its input's size, zero at t=0, carried from frame to frame: the movie is fed one frame at a
time and the state stores the past. Stack k > 1 sees the image concatenated with the
L2-normalised embeddings of stack k - 1. Output: a d-dimensional embedding per pixel.

Weights are stored as safetensors beside a JSON config; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .zoo import ModelError, resolve_model

__all__ = [
    "ModelConfig",
    "ConvGRU",
    "Hourglass",
    "RecurrentHourglass",
    "RecurrentState",
    "ModelError",
    "save_model",
    "package_model",
    "load_model",
    "default_model_dir",
]



@dataclass
class ModelConfig:
    """Architecture of a :class:`RecurrentHourglass`.

    The paper's network is ``filters=64, levels=7, stacks=2, embedding_dim=16``; the shipped
    default is smaller so that a 512x512 frame runs in about a second on two CPU cores.

    ``space_to_depth`` f > 1 runs the hourglasses on ``f x f`` blocks of pixels stacked as
    channels (pixel unshuffle) and returns each block's ``f * f`` embeddings (pixel shuffle):
    the same output resolution from maps f times smaller with more channels each, which
    convolutions run closer to the CPU's peak and whose activations stay in cache.
    """

    in_channels: int = 1
    filters: int = 32
    levels: int = 6
    stacks: int = 2
    embedding_dim: int = 8
    space_to_depth: int = 1

    def __post_init__(self):
        for name in ("in_channels", "filters", "levels", "stacks", "embedding_dim", "space_to_depth"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ModelError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.embedding_dim < 2:
            raise ModelError("ModelConfig.embedding_dim must be at least 2 (one direction is background)")

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ModelError(f"unknown architecture keys {sorted(unknown)}; expected {sorted(known)}")
        return cls(**data)

    @property
    def multiple(self) -> int:
        """Frame sizes are padded to a multiple of this (one 2x2 pooling per level but the last,
        after the space-to-depth blocks)."""
        return self.space_to_depth * 2 ** (self.levels - 1)


_FUSED_CONV = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
_ACTIVATIONS = {"relu": F.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "none": lambda t: t}
# oneDNN copies of weights by id(weight), dropped with the weight. (Not a WeakKeyDictionary:
# it compares keys with ==, which tensors answer element-wise.)
_PACKED: dict[int, dict] = {}


def _packed_weight(weight: torch.Tensor, part: tuple[int, int] | None, x: torch.Tensor, pad: int) -> torch.Tensor:
    """``weight[:rows, :cols]`` (``part``; None: all of it) reordered once into oneDNN's blocked
    layout for a convolution of ``x`` with padding ``pad``.

    torch reorders a plain weight tensor on every oneDNN call: one pass over the weights per
    convolution, which costs more than the arithmetic on the deep levels' small maps (a
    256->256 convolution of an 8x8 map ran 7x faster with a packed weight, one of a 64x64
    map 1.04x; docs/benchmarks.md, "What was made faster"). The layout oneDNN picks did not
    depend on the map size, so one copy per weight serves every frame and tile size.
    """
    cache = _PACKED.get(id(weight))
    if cache is None:
        cache = _PACKED[id(weight)] = {}
        weakref.finalize(weight, _PACKED.pop, id(weight), None)
    # In-place updates (training) repack, as do train(), eval() and load_state_dict() of a
    # RecurrentHourglass; inference tensors have no version counter.
    stamp = (0 if weight.is_inference() else weight._version, weight.data_ptr())
    seen, packed = cache.get(part, (None, None))
    if seen != stamp:
        packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            _part(weight, part).detach().contiguous().to_mkldnn(), [pad, pad], [1, 1], [1, 1], 1, list(x.shape))
        cache[part] = (stamp, packed)
    return packed


def _part(weight: torch.Tensor, part: tuple[int, int] | None) -> torch.Tensor:
    return weight if part is None else weight[: part[0], : part[1]]


def conv_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str,
             part: tuple[int, int] | None = None) -> torch.Tensor:
    """``act(conv2d(x, w, bias))``, "same" padding, ``act`` one of relu, sigmoid, tanh, none
    and ``w`` the first ``part = (out, in)`` channels of ``weight`` (None: all of it).

    Without autograd on a CPU, oneDNN applies the activation inside the convolution (torch's
    own fused operator, the one ``torch.compile`` emits on CPU), which saves a pass over the
    activations per convolution, and reads weights packed once (:func:`_packed_weight`), as
    ``torch.compile``'s freezing does. Training takes the plain path.
    """
    pad = weight.shape[-1] // 2
    if x.device.type == "cpu" and not torch.is_grad_enabled() and x.dtype == torch.float32 and _FUSED_CONV:
        w = _packed_weight(weight, part, x, pad)
        return torch.ops.mkldnn._convolution_pointwise(x, w, bias, [pad, pad], [1, 1], [1, 1], 1, act, [], None)
    return _ACTIVATIONS[act](F.conv2d(x, _part(weight, part), bias, padding=pad))


class ConvGRU(nn.Module):
    """Convolutional GRU cell with 3x3 convolutions and a state the size of its input.

    Both gates come from one convolution of ``[x, h]`` and the candidate from one of
    ``[x, r * h]``: two convolutions over twice the channels use the CPU better than six small
    ones (the same arithmetic).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.conv_zr = nn.Conv2d(2 * channels, 2 * channels, 3, padding=1)
        self.conv_n = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.register_load_state_dict_pre_hook(_split_gate_weights_to_joint)

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        c = self.channels
        if h is None:
            # Zero state (t = 0): only the input halves of the weights act, and r does not.
            z = conv_act(x, self.conv_zr.weight, self.conv_zr.bias[:c], "sigmoid", part=(c, c))
            return z * conv_act(x, self.conv_n.weight, self.conv_n.bias, "tanh", part=(c, c))
        xh = torch.cat([x, h], 1)
        z, r = conv_act(xh, self.conv_zr.weight, self.conv_zr.bias, "sigmoid").chunk(2, dim=1)
        if torch.is_grad_enabled():  # autograd keeps xh for the gradient of conv_zr
            xh = torch.cat([x, r * h], 1)
        else:  # [x, r * h] in this call's own copy of h: one concatenation less per frame
            xh[:, c:].mul_(r)
        n = conv_act(xh, self.conv_n.weight, self.conv_n.bias, "tanh")
        return torch.lerp(h, n, z)  # h + z * (n - h)


def _split_gate_weights_to_joint(module, state_dict, prefix, *args):
    """Read models saved with separate input and state convolutions (``conv_x``: x to z, r, n;
    ``conv_h``: h to z, r; ``conv_hn``: r * h to n) into the joint ``conv_zr`` / ``conv_n``."""
    if prefix + "conv_x.weight" not in state_dict:
        return
    c = module.channels
    wx, bx = state_dict.pop(prefix + "conv_x.weight"), state_dict.pop(prefix + "conv_x.bias")
    wh, whn = state_dict.pop(prefix + "conv_h.weight"), state_dict.pop(prefix + "conv_hn.weight")
    state_dict[prefix + "conv_zr.weight"] = torch.cat([wx[: 2 * c], wh], 1)
    state_dict[prefix + "conv_zr.bias"] = bx[: 2 * c]
    state_dict[prefix + "conv_n.weight"] = torch.cat([wx[2 * c :], whn], 1)
    state_dict[prefix + "conv_n.bias"] = bx[2 * c :]


class Hourglass(nn.Module):
    """One hourglass: conv + ReLU and 2x2 max-pool down, a ConvGRU on every skip path,
    nearest x2 upsampling, element-wise add and a 3x3 conv + ReLU up. No normalisation."""

    def __init__(self, in_channels: int, filters: int, levels: int, out_channels: int):
        super().__init__()
        self.levels = levels
        self.conv_in = nn.Conv2d(in_channels, filters, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(filters, filters, 3, padding=1) for _ in range(levels))
        self.grus = nn.ModuleList(ConvGRU(filters) for _ in range(levels))
        self.up = nn.ModuleList(nn.Conv2d(filters, filters, 3, padding=1) for _ in range(levels - 1))
        self.conv_out = nn.Conv2d(filters, out_channels, 1)

    def forward(self, x, states):
        x = conv_act(x, self.conv_in.weight, self.conv_in.bias, "relu")
        skips = []  # the ConvGRU outputs, which are also their new states
        for level in range(self.levels):
            x = conv_act(x, self.down[level].weight, self.down[level].bias, "relu")
            skips.append(self.grus[level](x, states[level]))
            if level < self.levels - 1:
                x = F.max_pool2d(x, 2)
        y = skips[-1]
        for level in range(self.levels - 2, -1, -1):
            y = F.interpolate(y, scale_factor=2.0, mode="nearest").add_(skips[level])
            y = conv_act(y, self.up[level].weight, self.up[level].bias, "relu")
        return conv_act(y, self.conv_out.weight, self.conv_out.bias, "none"), skips


@dataclass
class RecurrentState:
    """The ConvGRU states of every hourglass level of every stack (``None`` = zero state).

    The state belongs to one frame size (after padding). It can be detached (truncated
    backpropagation), moved between devices, and saved/restored with :meth:`to_dict` /
    :meth:`from_dict` so a movie can be paused and resumed mid-way.
    """

    tensors: list = field(default_factory=list)
    frames_seen: int = 0

    def detach(self) -> "RecurrentState":
        return RecurrentState([None if t is None else t.detach() for t in self.tensors], self.frames_seen)

    def to(self, device=None, dtype=None) -> "RecurrentState":
        return RecurrentState(
            [None if t is None else t.to(device=device, dtype=dtype) for t in self.tensors], self.frames_seen
        )

    def to_dict(self) -> dict:
        """Named CPU tensors, e.g. for :func:`safetensors.torch.save_file`."""
        out = {f"state.{i}": t.detach().cpu().contiguous() for i, t in enumerate(self.tensors) if t is not None}
        out["frames_seen"] = torch.tensor([self.frames_seen])
        out["n_tensors"] = torch.tensor([len(self.tensors)])
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "RecurrentState":
        n = int(data["n_tensors"][0])
        return cls([data.get(f"state.{i}") for i in range(n)], int(data["frames_seen"][0]))


class RecurrentHourglass(nn.Module):
    """Stacked recurrent hourglasses. ``forward(frame, state) -> (embeddings, new_state)``.

    ``frame``: (B, C, H, W) float tensor, any H and W (reflect-padded to a multiple of
    ``2 ** (levels - 1)`` and cropped back). Returns the last stack's raw embeddings
    (B, d, H, W); :meth:`forward_all` returns every stack's (for the loss).
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        blocks = c.space_to_depth**2
        self.stacks = nn.ModuleList(
            Hourglass((c.in_channels + (k > 0) * c.embedding_dim) * blocks, c.filters, c.levels,
                      c.embedding_dim * blocks)
            for k in range(c.stacks)
        )
        # Weights created under inference_mode have no version counter to see a reload by.
        self.register_load_state_dict_post_hook(self._forget_packed_weights)

    def train(self, mode: bool = True) -> "RecurrentHourglass":
        """As :meth:`torch.nn.Module.train`, and forget the packed weights (:func:`_packed_weight`):
        a fused optimizer writes weights without bumping their version, so the next inference
        after ``train()`` or ``eval()`` packs them afresh."""
        self._forget_packed_weights()
        return super().train(mode)

    def _forget_packed_weights(self, *_) -> None:
        for p in self.parameters():
            _PACKED.get(id(p), {}).clear()

    def initial_state(self) -> RecurrentState:
        return RecurrentState([None] * (self.config.stacks * self.config.levels), 0)

    def forward_all(self, frame: torch.Tensor, state: RecurrentState | None = None):
        if frame.ndim != 4 or frame.shape[1] != self.config.in_channels:
            raise ModelError(
                f"expected a frame tensor of shape (B, {self.config.in_channels}, H, W), got {tuple(frame.shape)}"
            )
        state = state or self.initial_state()
        h, w = frame.shape[-2:]
        m = self.config.multiple
        ph, pw = (-h) % m, (-w) % m
        x = frame
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(frame, (0, pw, 0, ph), mode=mode)
        levels, f = self.config.levels, self.config.space_to_depth
        down = (lambda t: F.pixel_unshuffle(t, f)) if f > 1 else (lambda t: t)
        up = (lambda t: F.pixel_shuffle(t, f)) if f > 1 else (lambda t: t)
        outputs, new_tensors = [], []
        x = inp = down(x)
        for k, hourglass in enumerate(self.stacks):
            if k > 0:
                inp = torch.cat([x, down(F.normalize(outputs[-1], dim=1))], dim=1)
            emb, s = hourglass(inp, state.tensors[k * levels : (k + 1) * levels])
            outputs.append(up(emb))
            new_tensors.extend(s)
        outputs = [o[..., :h, :w] for o in outputs]
        return outputs, RecurrentState(new_tensors, state.frames_seen + 1)

    def forward(self, frame: torch.Tensor, state: RecurrentState | None = None):
        outputs, new_state = self.forward_all(frame, state)
        return outputs[-1], new_state


def default_model_dir() -> Path:
    """Folder of the default packaged model (:data:`~napari_cosine_tracker.core.zoo.DEFAULT_MODEL`)."""
    return resolve_model(None)


def save_model(model: RecurrentHourglass, model_dir, metadata: dict | None = None) -> Path:
    """Write ``weights.safetensors`` and ``config.json`` into ``model_dir`` atomically."""
    from safetensors.torch import save_file

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {"format": "napari-cosine-tracker-model", "version": 1, "architecture": asdict(model.config)}
    config.update(metadata or {})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w = model_dir / ".weights.safetensors.tmp"
    tmp_c = model_dir / ".config.json.tmp"
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2))
    tmp_w.replace(model_dir / "weights.safetensors")
    tmp_c.replace(model_dir / "config.json")
    return model_dir


def package_model(model_dir, out_dir, zoo: dict, note: str = "") -> Path:
    """Copy a trained model folder into a packaged form: weights in float16 (half the size;
    they are loaded into float32, where the embeddings agree with the float32 weights' to a
    cosine of 0.99999 on the shipped model), ``config.json`` with its ``zoo`` entry (name,
    description, microscopy), and ``loss.csv``. Written atomically, like :func:`save_model`.
    """
    import shutil

    from safetensors.torch import load_file, save_file

    model_dir, out_dir = resolve_model(model_dir), Path(out_dir)
    config = read_model_config(model_dir)
    tensors = {k: (v.half() if v.is_floating_point() else v)
               for k, v in load_file(str(model_dir / "weights.safetensors")).items()}
    config = {"format": config["format"], "version": config["version"], "zoo": dict(zoo),
              **{k: v for k, v in config.items() if k not in ("format", "version", "zoo")}}
    if note:
        config["packaging"] = note
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_c = out_dir / ".weights.safetensors.tmp", out_dir / ".config.json.tmp"
    save_file(tensors, str(tmp_w))
    tmp_c.write_text(json.dumps(config, indent=2) + "\n")
    tmp_w.replace(out_dir / "weights.safetensors")
    tmp_c.replace(out_dir / "config.json")
    if (model_dir / "loss.csv").is_file():
        shutil.copyfile(model_dir / "loss.csv", out_dir / "loss.csv")
    return out_dir


def read_model_config(model_dir) -> dict:
    """The JSON config of a model folder or packaged model name, with clear errors for
    missing or broken files."""
    model_dir = resolve_model(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder {model_dir} does not exist; give a folder with weights.safetensors and config.json")
    path = model_dir / "config.json"
    if not path.is_file():
        raise ModelError(f"{path} is missing: a model folder needs config.json beside weights.safetensors")
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); re-export the model") from None
    if "architecture" not in config:
        raise ModelError(f"{path} has no 'architecture' section; is it a napari-cosine-tracker model?")
    return config


def load_model(model_dir=None, device="cpu") -> tuple[RecurrentHourglass, dict]:
    """Load a model folder or packaged model name (default: the default packaged model).
    Returns ``(model in eval mode, config)``.

    Only safetensors are read, so loading can never execute code.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_dir = resolve_model(model_dir)
    config = read_model_config(model_dir)
    weights = model_dir / "weights.safetensors"
    if not weights.is_file():
        pickled = [p.name for p in model_dir.glob("*") if p.suffix in {".pt", ".pth", ".pkl", ".ckpt"}]
        hint = (
            f" (found {pickled}: pickled weights are never loaded; convert them with "
            "torch.load(weights_only=True) and safetensors.torch.save_file)"
            if pickled
            else ""
        )
        raise ModelError(f"{weights} is missing{hint}")
    model = RecurrentHourglass(ModelConfig.from_dict(config["architecture"]))
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{weights} is truncated or not a safetensors file ({exc}); re-download or re-train it") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise ModelError(
            f"{weights} does not match the architecture in config.json: {' '.join(first)}"
        ) from None
    return model.to(device).eval(), config
