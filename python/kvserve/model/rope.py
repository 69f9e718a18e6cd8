"""Rotary position embeddings (RoPE) for Llama-family decoders (Llama, Mistral, Qwen2, Qwen3).

The rotation is the "rotate half" (GPT-NeoX) layout. The first `rotary_dim` channels of each head form
`rotary_dim // 2` pairs (x1[i], x2[i]), each turned by the angle `position * inv_freq[i]`; the other channels
pass through unchanged:

    channel:  0            rotary_dim // 2        rotary_dim                head_dim
              | x1               | x2                 | pass-through          |
    out1 = x1 * cos - x2 * sin        out2 = x2 * cos + x1 * sin

Outputs are meant to be bit-identical to transformers, so every float operation mirrors its order and
precision: inverse frequencies and cos/sin in float32 (some setup terms in Python floats, where transformers has
them), attention scaling multiplied into cos/sin in float32, then cos/sin cast to the activation dtype and the
rotation done in that dtype. Rearranging any of these (fusing the multiply-adds, simplifying `1 - (1 - r)`) moves
results by an ulp, which can flip a greedy token.

Cost model: every type except `dynamic` depends only on the position, so cos/sin come from a table built once
(grown when a larger position appears) and `cos_sin` is a gather. Call it once per step and hand its result to
`ops.rotary_embedding` (the rotation itself lives in ops, which never imports the model) in every layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from kvserve.ops import reference

SUPPORTED_ROPE_TYPES: tuple[str, ...] = ("default", "linear", "dynamic", "yarn", "llama3")

# transformers' fallback when a config names no rope_theta.
DEFAULT_ROPE_THETA = 10000.0


def _check_rope_type(rope_type: object) -> None:
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type {rope_type!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _first_set(*values: Any) -> Any:
    """The first value that is not None (a key can be absent or explicitly null in config.json)."""
    return next((value for value in values if value is not None), None)


def _check_positive(name: str, value: object) -> None:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True, slots=True)
class RopeParameters:
    """What determines the rotary embedding of one model; field meanings follow transformers' rope_parameters."""

    rope_type: str
    rope_theta: float
    # Channels of each head that rotate: head_dim * partial_rotary_factor.
    rotary_dim: int
    max_position_embeddings: int
    factor: float = 1.0
    # yarn and llama3: the pretraining context; None means max_position_embeddings.
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        _check_rope_type(self.rope_type)
        _check_positive("rope_theta", self.rope_theta)
        _check_positive_int("rotary_dim", self.rotary_dim)
        if self.rotary_dim % 2:
            raise ValueError(f"rotary_dim must be even (channels rotate in pairs), got {self.rotary_dim}")
        if self.rope_type == "dynamic" and self.rotary_dim == 2:
            raise ValueError("rotary_dim must be at least 4 for dynamic: its NTK exponent is dim / (dim - 2)")
        _check_positive_int("max_position_embeddings", self.max_position_embeddings)
        if self.original_max_position_embeddings is not None:
            _check_positive_int("original_max_position_embeddings", self.original_max_position_embeddings)
        for name in ("factor", "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor"):
            _check_positive(name, getattr(self, name))
        for name in ("mscale", "mscale_all_dim"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise ValueError(f"{name} must be a finite number or None, got {value!r}")
        if self.attention_factor is not None:
            _check_positive("attention_factor", self.attention_factor)
        if not isinstance(self.truncate, bool):
            raise ValueError(f"truncate must be a bool, got {self.truncate!r}")
        # llama3 divides by their difference to place the smoothing band.
        if self.high_freq_factor <= self.low_freq_factor:
            raise ValueError(
                f"high_freq_factor ({self.high_freq_factor}) must be greater than low_freq_factor "
                f"({self.low_freq_factor})"
            )

    @property
    def original_max_positions(self) -> int:
        """The context the model was pretrained on; dynamic NTK only rescales sequences longer than it."""
        if self.original_max_position_embeddings is None:
            return self.max_position_embeddings
        return self.original_max_position_embeddings


def rope_parameters_from_hf_config(config: Mapping[str, Any], head_dim: int) -> RopeParameters:
    """RoPE parameters from a parsed HF config.json, read the way transformers 5 reads them.

    Two layouts exist: transformers 5 writes `rope_parameters` ({"rope_type", "rope_theta", ...}); older configs
    have top-level `rope_theta` and a `rope_scaling` dict keyed by "type" or "rope_type". Keys inside the dict
    win over top-level ones; a non-empty `rope_scaling` wins over `rope_parameters`, as in transformers.
    """
    _check_positive_int("head_dim", head_dim)
    rope = dict(config.get("rope_scaling") or config.get("rope_parameters") or {})
    if any(isinstance(value, Mapping) for value in rope.values()):
        raise ValueError("rope_parameters nested per layer type are not supported by Llama-family models")
    if "mrope_section" in rope:
        raise ValueError("multimodal rope (mrope_section) is not supported")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    _check_rope_type(rope_type)

    rope_theta = _first_set(rope.get("rope_theta"), config.get("rope_theta"), DEFAULT_ROPE_THETA)
    partial_rotary_factor = _first_set(rope.get("partial_rotary_factor"), config.get("partial_rotary_factor"), 1.0)
    if not _is_number(partial_rotary_factor) or not 0 < partial_rotary_factor <= 1:
        raise ValueError(f"partial_rotary_factor must be in (0, 1], got {partial_rotary_factor!r}")
    max_position_embeddings = config.get("max_position_embeddings")
    _check_positive_int("max_position_embeddings", max_position_embeddings)

    original_max_position_embeddings = None
    if rope_type in ("yarn", "llama3"):
        # A top-level value beats the one inside the dict (transformers' exception for Phi-3-style configs).
        original_max_position_embeddings = (
            config.get("original_max_position_embeddings")
            or rope.get("original_max_position_embeddings")
            or max_position_embeddings
        )

    factor = rope.get("factor")
    if rope_type == "default":
        factor = 1.0
    elif factor is None and rope_type == "yarn":
        # DeepSeek-V3-style yarn configs leave the factor implicit in the two context lengths.
        factor = max_position_embeddings / original_max_position_embeddings
    elif factor is None:
        raise ValueError(f"rope type {rope_type!r} requires factor")

    llama3_keys: dict[str, Any] = {}
    if rope_type == "llama3":
        missing = sorted({"low_freq_factor", "high_freq_factor"} - rope.keys())
        if missing:
            raise ValueError(f"rope type 'llama3' requires {', '.join(missing)}")
        llama3_keys = {"low_freq_factor": rope["low_freq_factor"], "high_freq_factor": rope["high_freq_factor"]}

    return RopeParameters(
        rope_type=rope_type,
        rope_theta=rope_theta,
        rotary_dim=int(head_dim * partial_rotary_factor),
        max_position_embeddings=max_position_embeddings,
        factor=factor,
        original_max_position_embeddings=original_max_position_embeddings,
        # transformers replaces any falsy beta with the paper's default.
        beta_fast=rope.get("beta_fast") or 32.0,
        beta_slow=rope.get("beta_slow") or 1.0,
        mscale=rope.get("mscale"),
        mscale_all_dim=rope.get("mscale_all_dim"),
        attention_factor=rope.get("attention_factor"),
        truncate=rope.get("truncate", True),
        **llama3_keys,
    )


def _theta_powers(theta: float | torch.Tensor, rotary_dim: int, device: torch.device) -> torch.Tensor:
    """theta ** (2i / rotary_dim) per channel pair i, float32 [rotary_dim // 2]: the inverse of inv_freq."""
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.int64, device=device).to(torch.float32) / rotary_dim
    return theta**exponents


def _dynamic_ntk_inv_freq(params: RopeParameters, seq_len: int | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Inverse frequencies of dynamic NTK for a sequence of seq_len tokens (seq_len >= original context).

    transformers evaluates the base with a Python int at construction (float64 arithmetic) and with a 0-dim int64
    tensor when a longer sequence arrives (float32 arithmetic); passing the same kind of seq_len here reproduces
    each rounding.
    """
    dim = params.rotary_dim
    original = params.original_max_positions
    factor = params.factor
    base = params.rope_theta * ((factor * seq_len / original) - (factor - 1)) ** (dim / (dim - 2))
    return 1.0 / _theta_powers(base, dim, device)


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _yarn_inv_freq(params: RopeParameters, device: torch.device) -> tuple[torch.Tensor, float]:
    """YaRN: pairs that turn many times within the original context keep their frequency (extrapolate), pairs
    that turn less than once are divided by factor (interpolate), a linear ramp blends the band between."""
    dim = params.rotary_dim
    original = params.original_max_positions
    factor = params.factor
    if params.attention_factor is not None:
        attention_factor = params.attention_factor
    elif params.mscale and params.mscale_all_dim:
        attention_factor = _yarn_mscale(factor, params.mscale) / _yarn_mscale(factor, params.mscale_all_dim)
    else:
        attention_factor = _yarn_mscale(factor)

    def pair_index_for_rotations(num_rotations: float) -> float:
        # The (fractional) pair whose wavelength fits num_rotations times into the original context.
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (2 * math.log(params.rope_theta))

    low = pair_index_for_rotations(params.beta_fast)
    high = pair_index_for_rotations(params.beta_slow)
    if params.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # keeps the ramp's denominator non-zero

    powers = _theta_powers(params.rope_theta, dim, device)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device=device) - low) / (high - low)).clamp(0, 1)
    # `1 - extrapolation_weight` is not `ramp` bit for bit in float32, and transformers blends with the former.
    extrapolation_weight = 1 - ramp
    inv_freq = (1.0 / (factor * powers)) * (1 - extrapolation_weight) + (1.0 / powers) * extrapolation_weight
    return inv_freq, attention_factor


def _llama3_inv_freq(params: RopeParameters, device: torch.device) -> torch.Tensor:
    """Llama 3.1: wavelengths longer than original/low_freq_factor are divided by factor, shorter than
    original/high_freq_factor kept, and the band between interpolated smoothly."""
    original = params.original_max_positions
    factor = params.factor
    low_freq_factor = params.low_freq_factor
    high_freq_factor = params.high_freq_factor
    inv_freq = 1.0 / _theta_powers(params.rope_theta, params.rotary_dim, device)
    wavelength = 2 * math.pi / inv_freq
    long_scaled = torch.where(wavelength > original / low_freq_factor, inv_freq / factor, inv_freq)
    smooth = (original / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * long_scaled / factor + smooth * long_scaled
    is_medium = (wavelength >= original / high_freq_factor) & (wavelength <= original / low_freq_factor)
    return torch.where(is_medium, smoothed, long_scaled)


def _static_inv_freq(params: RopeParameters, device: torch.device) -> tuple[torch.Tensor, float]:
    """Inverse frequencies (float32 [rotary_dim // 2]) and the factor cos/sin are multiplied by.

    For dynamic these are the frequencies of sequences within the original context.
    """
    match params.rope_type:
        case "default":
            return 1.0 / _theta_powers(params.rope_theta, params.rotary_dim, device), 1.0
        case "linear":
            return 1.0 / _theta_powers(params.rope_theta, params.rotary_dim, device) / params.factor, 1.0
        case "dynamic":
            return _dynamic_ntk_inv_freq(params, params.original_max_positions, device), 1.0
        case "yarn":
            return _yarn_inv_freq(params, device)
        case "llama3":
            return _llama3_inv_freq(params, device), 1.0
    raise AssertionError(f"unreachable: rope_type {params.rope_type!r} passed validation")


def _cos_sin_rows(
    positions: torch.Tensor, inv_freq: torch.Tensor, attention_scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos and sin [len(positions), rotary_dim // 2] of position * inv_freq."""
    angles = positions.to(torch.float32)[:, None] * inv_freq
    return angles.cos() * attention_scaling, angles.sin() * attention_scaling


class RotaryEmbedding:
    """Rotates query and key of a flattened batch; tokens of different requests may be mixed in any order."""

    __slots__ = ("params", "device", "_inv_freq", "_attention_scaling", "_cos_table", "_sin_table")

    def __init__(self, params: RopeParameters, device: torch.device | str = "cpu") -> None:
        self.params = params
        self.device = torch.device(device)
        # Computed on the CPU and moved, as transformers computes them at construction before `.to(device)`.
        inv_freq, self._attention_scaling = _static_inv_freq(params, torch.device("cpu"))
        self._inv_freq = inv_freq.to(self.device)
        self._cos_table, self._sin_table = self._build_table(params.max_position_embeddings)

    def _build_table(self, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(num_positions, device=self.device)
        return _cos_sin_rows(positions, self._inv_freq, self._attention_scaling)

    def cos_sin(
        self,
        positions: torch.Tensor,
        seq_lens: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
        max_position: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin [T, rotary_dim // 2] in dtype, attention scaling included, for `ops.rotary_embedding`.

        positions: [T] int32/int64, each token's absolute position. seq_lens: [T], the length of each token's
        request up to and including this step's last token of it (its largest position + 1); only `dynamic`
        reads it, and when it is None all tokens count as one request, as in a transformers forward pass.
        Pass dtype=the activation dtype to cast once per step instead of once per layer. max_position: a bound
        on the positions known on the host (a step's max_seq_len - 1, from the scheduler): with it nothing is
        read back from the device, so a forward never waits for the device here (overlapped scheduling); the
        positions are then trusted to be non-negative. Without it they are checked.
        """
        if positions.dim() != 1 or positions.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"positions must be a 1-D int32/int64 tensor, got {positions.dtype} {tuple(positions.shape)}"
            )
        if positions.numel() == 0:
            empty = torch.empty(0, self.params.rotary_dim // 2, dtype=dtype, device=self.device)
            return empty, empty.clone()
        if seq_lens is not None and seq_lens.shape != positions.shape:
            raise ValueError(f"seq_lens shape {tuple(seq_lens.shape)} differs from positions {tuple(positions.shape)}")
        if max_position is None:
            min_position, max_position = (int(value) for value in torch.aminmax(positions))
            if min_position < 0:
                raise ValueError(f"positions must be non-negative, got {min_position}")
            if seq_lens is not None and bool((positions >= seq_lens).any()):
                raise ValueError("every position must be smaller than its request's seq_len")
        num_cached = self._cos_table.shape[0]
        if max_position >= num_cached:
            # Doubling keeps the number of rebuilds logarithmic in the longest sequence.
            self._cos_table, self._sin_table = self._build_table(max(max_position + 1, 2 * num_cached))
        cos = self._cos_table[positions]
        sin = self._sin_table[positions]
        if self.params.rope_type == "dynamic":
            self._rescale_long_requests(positions, max_position, seq_lens, cos, sin)
        return cos.to(dtype), sin.to(dtype)

    def _rescale_long_requests(
        self,
        positions: torch.Tensor,
        max_position: int,
        seq_lens: torch.Tensor | None,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> None:
        """Overwrites, in cos and sin, the rows of tokens whose request is longer than the original context with
        what transformers computes for that request alone: frequencies from the request's own length."""
        original = self.params.original_max_positions
        if max_position < original:
            return  # no request is longer than the original context (seq_lens <= max_position + 1): no sync
        if seq_lens is None:
            seq_lens = torch.full_like(positions, max_position + 1)
        is_long = seq_lens > original
        if not bool(is_long.any()):
            return
        # The only per-request loop of a step: one pass per distinct long length, so at most one per request.
        for seq_len in torch.unique(seq_lens[is_long]).tolist():
            rows = torch.nonzero(seq_lens == seq_len).squeeze(1)
            seq_len_tensor = torch.tensor(seq_len, dtype=torch.int64, device=self.device)
            inv_freq = _dynamic_ntk_inv_freq(self.params, seq_len_tensor, self.device)
            cos[rows], sin[rows] = _cos_sin_rows(positions[rows], inv_freq, self._attention_scaling)

    def __call__(
        self,
        positions: torch.Tensor,
        query: torch.Tensor,
        key: torch.Tensor,
        seq_lens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotated (query, key); see `cos_sin` for positions and seq_lens, `ops.reference.rotary_embedding`
        for the shapes."""
        cos, sin = self.cos_sin(positions, seq_lens)
        return reference.rotary_embedding(query, key, cos, sin)
