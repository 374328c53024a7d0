"""Multiresolution hash encoding (Müller et al., Instant-NGP, SIGGRAPH 2022) and its small MLP
head, configured with tiny-cuda-nn's JSON schema: FaVoR's second descriptor-field backend.

Encoding (``{"otype": "HashGrid", ...}``), in tiny-cuda-nn's conventions so that this pure-torch
encoding and ``tinycudann.Encoding`` give the same values for the same parameters:

- level ``l`` (0 .. n_levels-1) has scale ``s_l = base_resolution * per_level_scale**l - 1`` and
  ``ceil(s_l) + 1`` grid vertices per axis (the resolution grows by ``b = per_level_scale``);
- a point ``x`` in [0, 1]^3 lies at ``s_l * x + 0.5`` in vertex units; its cell's lower corner is
  the floor and the eight corners are weighted trilinearly by the fractional part;
- a level holds ``T_l = min(2**log2_hashmap_size, resolution**3 rounded up to a multiple of 8)``
  entries of ``n_features_per_level`` features. A vertex (x, y, z) indexes densely,
  ``x + y*res + z*res**2``, where the level's grid fits (``res**3 <= T_l``), else by the spatial
  hash ``(x * 1) xor (y * 2654435761) xor (z * 805459861)`` in 32-bit unsigned arithmetic;
  either index is taken modulo ``T_l``;
- parameters start uniform in [-1e-4, 1e-4]; the output concatenates the levels, coarsest
  first, ``n_features_per_level`` features each.

Network (``{"otype": "FullyFusedMLP", ...}``): ``n_hidden_layers`` layers of ``n_neurons`` with
``activation``, then a linear output layer with ``output_activation``; no biases (as
tiny-cuda-nn's fully fused MLP). The MLP always runs in torch: it is a few thousand weights, and
its weights then mean the same on both encoding paths.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

HASH_PRIMES = (1, 2654435761, 805459861)
ACTIVATIONS = {"None": nn.Identity, "ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh}
NEURON_COUNTS = (16, 32, 64, 128)  # what tiny-cuda-nn's FullyFusedMLP supports


def _read_schema(where: str, content: Any, otype: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """Check a tiny-cuda-nn config dict: ``otype`` as expected, only known keys, values of the
    defaults' types; return the defaults updated by it. Errors name ``where`` and the key."""
    if not isinstance(content, dict):
        raise ValueError(f"{where} must be a mapping in tiny-cuda-nn's schema, got {type(content).__name__}")
    if content.get("otype") != otype:
        raise ValueError(f"{where}.otype must be {otype!r}, got {content.get('otype')!r}")
    values = dict(defaults)
    for key, value in content.items():
        if key == "otype":
            continue
        if key not in defaults:
            raise ValueError(f"{where}: unknown key {key!r} (known: otype, {', '.join(sorted(defaults))})")
        expected = type(defaults[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise ValueError(f"{where}.{key} must be {expected.__name__}, got {value!r}")
        values[key] = value
    return values


@dataclass(frozen=True)
class HashGridSpec:
    """tiny-cuda-nn's ``HashGrid`` encoding of 3-D points."""

    n_levels: int = 8
    n_features_per_level: int = 2
    log2_hashmap_size: int = 15
    base_resolution: int = 16
    per_level_scale: float = 2.0

    @classmethod
    def from_schema(cls, content: Any, where: str = "encoding") -> HashGridSpec:
        optional = {"interpolation": "Linear", "hash": "CoherentPrime"}  # tiny-cuda-nn's keys with their defaults
        values = _read_schema(where, content, "HashGrid", {**cls().__dict__, **optional})
        for key, only in optional.items():
            if values.pop(key) != only:
                raise ValueError(f"{where}.{key}: only {only!r} is implemented")
        spec = cls(**values)
        checks = {  # key: (holds, the allowed values)
            "n_levels": (1 <= spec.n_levels <= 32, "1 .. 32"),
            "n_features_per_level": (spec.n_features_per_level in (1, 2, 4, 8), "1, 2, 4 or 8"),
            "log2_hashmap_size": (4 <= spec.log2_hashmap_size <= 28, "4 .. 28"),
            "base_resolution": (spec.base_resolution >= 2, ">= 2"),
            "per_level_scale": (spec.per_level_scale >= 1.0, ">= 1"),
        }
        for key, (ok, allowed) in checks.items():
            if not ok:
                raise ValueError(f"{where}.{key} must be {allowed}, got {getattr(spec, key)!r}")
        return spec

    def schema(self) -> dict[str, Any]:
        return {"otype": "HashGrid", **self.__dict__}

    @property
    def output_dim(self) -> int:
        return self.n_levels * self.n_features_per_level

    def level_scales(self) -> np.ndarray:
        """(n_levels,) float32 ``s_l``, computed as tiny-cuda-nn does (float32 exp2)."""
        levels = np.arange(self.n_levels, dtype=np.float32)
        return (np.exp2(levels * np.float32(math.log2(self.per_level_scale))) * self.base_resolution - 1).astype(
            np.float32
        )

    def level_resolutions(self) -> np.ndarray:
        """(n_levels,) vertices per axis of each level."""
        return np.ceil(self.level_scales()).astype(np.int64) + 1

    def level_sizes(self) -> np.ndarray:
        """(n_levels,) entries of each level's table ``T_l``."""
        dense = -(-(self.level_resolutions() ** 3) // 8) * 8
        return np.minimum(dense, 2**self.log2_hashmap_size)


@dataclass(frozen=True)
class MlpSpec:
    """tiny-cuda-nn's ``FullyFusedMLP``."""

    n_neurons: int = 64
    n_hidden_layers: int = 2
    activation: str = "ReLU"
    output_activation: str = "None"

    @classmethod
    def from_schema(cls, content: Any, where: str = "network") -> MlpSpec:
        spec = cls(**_read_schema(where, content, "FullyFusedMLP", cls().__dict__))
        if spec.n_neurons not in NEURON_COUNTS:
            raise ValueError(f"{where}.n_neurons must be one of {NEURON_COUNTS}, got {spec.n_neurons}")
        if not 1 <= spec.n_hidden_layers <= 8:
            raise ValueError(f"{where}.n_hidden_layers must be 1 .. 8, got {spec.n_hidden_layers}")
        for key in ("activation", "output_activation"):
            if getattr(spec, key) not in ACTIVATIONS:
                raise ValueError(f"{where}.{key} must be one of {sorted(ACTIVATIONS)}, got {getattr(spec, key)!r}")
        return spec

    def schema(self) -> dict[str, Any]:
        return {"otype": "FullyFusedMLP", **self.__dict__}


def vertex_indices(lower: torch.Tensor, resolutions: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Table indices (N, L, 2, 2, 2), within each level, of the 8 corners of the cells whose
    lower vertices are ``lower`` (N, L, 3) (x, y, z), corner order (z, y, x). Level l has
    ``resolutions[l]`` vertices per axis and ``sizes[l]`` entries, and the levels that fit
    densely (``resolutions**3 <= sizes``, always the coarsest ones) come first.

    In int32: the hash's products wrap modulo 2**32 exactly as tiny-cuda-nn's uint32 ones, and a
    hashed level's size is a power of two, so the modulo is a mask of the low bits. A dense index
    is below twice the level's size (the upper corner of a point at 1 reaches ``resolution``), so
    its modulo is one subtraction."""
    corners = lower.int()[..., None] + torch.arange(2, dtype=torch.int32, device=lower.device)  # (N, L, 3, 2)
    x, y, z = corners[..., 0, :], corners[..., 1, :], corners[..., 2, :]  # (N, L, 2) each
    dense_levels = int((resolutions**3 <= sizes).sum())
    res = resolutions[:dense_levels, None].int()
    size = sizes[:dense_levels, None, None, None].int()
    dense = (
        x[:, :dense_levels, None, None, :]
        + (y[:, :dense_levels] * res)[:, :, None, :, None]
        + (z[:, :dense_levels] * res * res)[:, :, :, None, None]
    )
    dense = torch.where(dense >= size, dense - size, dense)
    primes = [torch.tensor(prime, dtype=torch.int64).to(torch.int32) for prime in HASH_PRIMES]  # wrapped to int32
    hashed = (
        (x[:, dense_levels:] * primes[0])[:, :, None, None, :]
        ^ (y[:, dense_levels:] * primes[1])[:, :, None, :, None]
        ^ (z[:, dense_levels:] * primes[2])[:, :, :, None, None]
    ) & (sizes[dense_levels:, None, None, None].int() - 1)
    return torch.cat([dense, hashed], dim=1)


def corner_weights(fraction: torch.Tensor) -> torch.Tensor:
    """Trilinear weights (N, L, 2, 2, 2), corner order (z, y, x), of fractional positions (N, L, 3)."""
    per_axis = torch.stack([1 - fraction, fraction], dim=-1)  # (N, L, 3, 2)
    return per_axis[..., 2, :, None, None] * per_axis[..., 1, None, :, None] * per_axis[..., 0, None, None, :]


class WeightedRows(torch.autograd.Function):
    """``(table[index] * weights[..., None]).sum(1)``: (M, F) from ``table`` (T, F), ``index``
    and ``weights`` (M, K); its backward scatters into the table with one ``index_add_``
    (much faster on CPU than the generic indexing backward)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        rows = table.index_select(0, index.reshape(-1)).reshape(*index.shape, -1)  # (M, K, F)
        ctx.save_for_backward(table, index, weights)
        return (rows * weights[..., None]).sum(dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, index, weights = ctx.saved_tensors
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            spread = (weights[..., None] * grad[:, None]).reshape(-1, grad.shape[1])
            grad_table = torch.zeros_like(table).index_add_(0, index.reshape(-1), spread)
        if ctx.needs_input_grad[2]:
            rows = table.index_select(0, index.reshape(-1)).reshape(*index.shape, -1)
            grad_weights = (rows * grad[:, None]).sum(dim=-1)
        return grad_table, None, grad_weights


class HashEncoding(nn.Module):
    """The multiresolution hash encoding in torch: points (N, 3) in [0, 1]^3 (clamped) ->
    features (N, n_levels * n_features_per_level). Parameters: ``table`` (sum T_l, F), level
    ``l``'s entries at rows ``offsets[l] : offsets[l] + T_l`` (tiny-cuda-nn's layout, flattened
    row-major). All levels are evaluated at once."""

    def __init__(self, spec: HashGridSpec, generator: torch.Generator | None = None):
        super().__init__()
        self.spec = spec
        sizes = spec.level_sizes()
        self.register_buffer("scales", torch.from_numpy(spec.level_scales()), persistent=False)
        self.register_buffer("resolutions", torch.from_numpy(spec.level_resolutions()), persistent=False)
        self.register_buffer("sizes", torch.from_numpy(sizes), persistent=False)
        self.register_buffer("offsets", torch.from_numpy(np.cumsum(sizes) - sizes).int(), persistent=False)
        table = torch.empty(int(sizes.sum()), spec.n_features_per_level)
        self.table = nn.Parameter(table.uniform_(-1e-4, 1e-4, generator=generator))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        position = points.float().clamp(0, 1)[:, None] * self.scales[:, None] + 0.5  # (N, L, 3)
        lower = position.floor()
        index = vertex_indices(lower, self.resolutions, self.sizes) + self.offsets[:, None, None, None]
        weights = corner_weights(position - lower)
        features = WeightedRows.apply(self.table, index.reshape(-1, 8), weights.reshape(-1, 8))  # (N * L, F)
        return features.reshape(len(points), -1)


def mlp(spec: MlpSpec, inputs: int, outputs: int) -> nn.Sequential:
    """The fully fused MLP's layers, bias-free, in torch."""
    layers: list[nn.Module] = []
    width = inputs
    for _ in range(spec.n_hidden_layers):
        layers += [nn.Linear(width, spec.n_neurons, bias=False), ACTIVATIONS[spec.activation]()]
        width = spec.n_neurons
    layers += [nn.Linear(width, outputs, bias=False), ACTIVATIONS[spec.output_activation]()]
    return nn.Sequential(*layers)


class TinyCudaNNEncoding(nn.Module):
    """tiny-cuda-nn's fused encoding of the same spec, holding the same table (float32, CUDA)."""

    def __init__(self, spec: HashGridSpec, table: torch.Tensor):
        super().__init__()
        import tinycudann

        self.spec = spec
        self.module = tinycudann.Encoding(3, spec.schema(), dtype=torch.float32).cuda()
        with torch.no_grad():
            self.module.params.copy_(table.detach().flatten().to(self.module.params))

    @property
    def table(self) -> torch.Tensor:
        return self.module.params.view(-1, self.spec.n_features_per_level)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.module(points.float().clamp(0, 1)).float()


def tinycudann_available() -> bool:
    """True when ``tinycudann`` imports and CUDA is present."""
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """``auto``: ``cuda`` when tiny-cuda-nn can run, else ``cpu``; ``cuda`` requires tiny-cuda-nn."""
    if device == "auto":
        return "cuda" if tinycudann_available() else "cpu"
    if device == "cuda" and not tinycudann_available():
        raise ValueError("device 'cuda' needs tinycudann and CUDA (pip install 'reloc[tcnn]', see pyproject.toml)")
    return device


class HashGridField(nn.Module):
    """One descriptor field for a whole scene: world points (..., 3) inside the box ``lower`` ..
    ``upper`` (3,) -> (..., 1 + C) raw density and descriptor channels, through the hash
    encoding and the MLP head. On ``cuda`` the encoding is tiny-cuda-nn's, else the torch one."""

    def __init__(
        self,
        encoding: HashGridSpec,
        network: MlpSpec,
        lower: torch.Tensor,
        upper: torch.Tensor,
        descriptor_dim: int,
        seed: int = 0,
    ):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.encoding_spec, self.network_spec, self.descriptor_dim = encoding, network, descriptor_dim
        self.encoding: nn.Module = HashEncoding(encoding, generator)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.head = mlp(network, encoding.output_dim, 1 + descriptor_dim)
        self.register_buffer("lower", lower.float())
        self.register_buffer("upper", upper.float())

    def on_device(self, device: str) -> HashGridField:
        """This field on ``cpu`` (torch encoding) or ``cuda`` (tiny-cuda-nn encoding)."""
        if device == "cuda" and not isinstance(self.encoding, TinyCudaNNEncoding):
            self.encoding = TinyCudaNNEncoding(self.encoding_spec, self.encoding.table)
        if device == "cpu" and isinstance(self.encoding, TinyCudaNNEncoding):
            torch_encoding = HashEncoding(self.encoding_spec)
            with torch.no_grad():
                torch_encoding.table.copy_(self.encoding.table.cpu())
            self.encoding = torch_encoding
        return self.to(device)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        unit = (points - self.lower) / (self.upper - self.lower)
        flat = unit.reshape(-1, 3)
        return self.head(self.encoding(flat)).reshape(*points.shape[:-1], -1)

    def state(self) -> dict[str, Any]:
        """Everything ``from_state`` needs, on the CPU; the table in half precision."""
        return {
            "encoding": self.encoding_spec.schema(),
            "network": self.network_spec.schema(),
            "descriptor_dim": self.descriptor_dim,
            "lower": self.lower.cpu(),
            "upper": self.upper.cpu(),
            "table": self.encoding.table.detach().cpu().half(),
            "head": {key: value.cpu().half() for key, value in self.head.state_dict().items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> HashGridField:
        field = cls(
            HashGridSpec.from_schema(state["encoding"]),
            MlpSpec.from_schema(state["network"]),
            state["lower"],
            state["upper"],
            state["descriptor_dim"],
        )
        with torch.no_grad():
            field.encoding.table.copy_(state["table"].float())
        field.head.load_state_dict({key: value.float() for key, value in state["head"].items()})
        return field

    def parameter_bytes(self) -> int:
        """Bytes of the stored parameters (half precision)."""
        return 2 * sum(parameter.numel() for parameter in self.parameters())
