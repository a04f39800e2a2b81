"""Reader of dlib's serialization format for a `loss_metric` network (dlib's face recognition
ResNet, `dlib_face_recognition_resnet_model_v1.dat`), written from the format description alone
(no dlib needed).

The file is: the loss header, the versions of all layer wrappers (outermost first), the input
layer, then one body per computational layer, innermost (first computed) first. `parse_dlib_file`
turns it into a `DlibModel`: the input layer's means and size and a list of layer records in
forward order. Every error is a `CtdError` naming the file, the byte offset and what was expected.
"""

from __future__ import annotations

import bz2
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from ctd_runtime.errors import CtdError

LOSS_TAG = "loss_metric_2"
_MAX_VERSIONS = 100_000


# ---------------------------------------------------------------------------------------------
# layer records (forward order; `index` is 1-based, `offset` is the byte where the body starts)


@dataclass
class ConvRecord:
    index: int
    offset: int
    tag: str
    filters: np.ndarray            # float32 [num_filters, in_channels, nr, nc] (PyTorch OIHW)
    bias: np.ndarray | None        # float32 [num_filters], None when the conv has no bias
    stride: tuple[int, int]        # (y, x)
    padding: tuple[int, int]       # (y, x)
    use_relu: bool = False         # con_6 only: a ReLU fused into the conv
    kind: str = field(default="con", init=False)


@dataclass
class AffineRecord:
    index: int
    offset: int
    tag: str
    gamma: np.ndarray              # float32 [C]
    beta: np.ndarray               # float32 [C]
    mode: int                      # 0 = per channel (conv mode), 1 = per element (fc mode)
    disabled: bool = False         # affine_2 only
    kind: str = field(default="affine", init=False)


@dataclass
class ReluRecord:
    index: int
    offset: int
    tag: str
    disabled: bool = False         # relu_2 only
    kind: str = field(default="relu", init=False)


@dataclass
class PoolRecord:
    index: int
    offset: int
    tag: str
    kind: str                      # "max_pool" or "avg_pool"
    window: tuple[int, int]        # (nr, nc); (0, 0) = the whole feature map
    stride: tuple[int, int]        # (y, x)
    padding: tuple[int, int]       # (y, x)


@dataclass
class AddPrevRecord:
    index: int
    offset: int
    tag: str
    kind: str = field(default="add_prev", init=False)


@dataclass
class FcRecord:
    index: int
    offset: int
    tag: str
    weights: np.ndarray            # float32 [num_inputs, num_outputs]: output = input @ weights
    bias: np.ndarray | None        # float32 [num_outputs], None when the fc has no bias
    bias_mode: int                 # 0 = with bias, 1 = no bias
    kind: str = field(default="fc", init=False)


LayerRecord = Union[ConvRecord, AffineRecord, ReluRecord, PoolRecord, AddPrevRecord, FcRecord]


@dataclass
class DlibModel:
    """A parsed dlib metric-learning network."""

    path: Path
    file_size: int
    loss: str                                  # "loss_metric_2"
    margin: float
    distance_threshold: float
    versions: list[int]                        # wrapper versions, outermost first
    input_layer: str                           # "input_rgb_image_sized"
    input_means: tuple[float, float, float]    # float32 values (R, G, B)
    input_size: tuple[int, int] | None         # (nr, nc), None for an unsized input layer
    layers: list[LayerRecord]                  # forward order (innermost first)
    sample_expansion_factor: int = 1

    def parameter_count(self) -> int:
        n = 0
        for rec in self.layers:
            if isinstance(rec, ConvRecord):
                n += rec.filters.size + (0 if rec.bias is None else rec.bias.size)
            elif isinstance(rec, AffineRecord):
                n += rec.gamma.size + rec.beta.size
            elif isinstance(rec, FcRecord):
                n += rec.weights.size + (0 if rec.bias is None else rec.bias.size)
        return n


# ---------------------------------------------------------------------------------------------
# primitives


def _shape_str(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.n = len(data)
        self.pos = 0
        self.path = path

    def error(self, message: str) -> CtdError:
        return CtdError(message, path=self.path)

    def _need(self, k: int, what: str, start: int) -> None:
        if self.pos + k > self.n:
            raise self.error(
                f"file ends at byte {self.n} while reading {what} (started at byte {start}, "
                f"{self.pos + k - self.n} more bytes needed): the file is truncated"
            )

    def integer(self, what: str, max_bytes: int = 8) -> int:
        start = self.pos
        self._need(1, what, start)
        cb = self.data[self.pos]
        size = cb & 0x0F
        if cb & 0x70 or size == 0 or size > max_bytes:
            raise self.error(
                f"expected {what} (a dlib integer of at most {max_bytes} bytes) at byte {start}, "
                f"found control byte 0x{cb:02x}"
            )
        self.pos += 1
        self._need(size, what, start)
        value = int.from_bytes(self.data[self.pos:self.pos + size], "little")
        self.pos += size
        return -value if cb & 0x80 else value

    def expect_int(self, what: str, expected: int) -> int:
        start = self.pos
        value = self.integer(what)
        if value != expected:
            raise self.error(f"expected {what} = {expected} at byte {start}, found {value}")
        return value

    def nonneg(self, what: str) -> int:
        start = self.pos
        value = self.integer(what)
        if value < 0:
            raise self.error(f"expected {what} >= 0 at byte {start}, found {value}")
        return value

    def float_(self, what: str) -> float:
        start = self.pos
        self._need(1, what, start)
        if self.data[self.pos] & 0x70:
            raise self.error(
                f"expected {what} (a dlib float: mantissa, exponent) at byte {start}, found "
                f"byte 0x{self.data[self.pos]:02x} (dlib's old text float format is not supported)"
            )
        mantissa = self.integer(f"{what} (mantissa)", 8)
        exponent = self.integer(f"{what} (exponent)", 2)
        if exponent == 32000:
            return math.inf
        if exponent == 32001:
            return -math.inf
        if exponent == 32002:
            return math.nan
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.error(
                f"expected {what} at byte {start}, found an out-of-range float "
                f"{mantissa} x 2^{exponent}"
            ) from None

    def bool_(self, what: str) -> bool:
        start = self.pos
        self._need(1, what, start)
        b = self.data[self.pos]
        if b not in (0x30, 0x31):
            raise self.error(f"expected {what} (a bool, '0' or '1') at byte {start}, found 0x{b:02x}")
        self.pos += 1
        return b == 0x31

    def string(self, what: str) -> str:
        start = self.pos
        length = self.nonneg(f"{what} (string length)")
        self._need(length, what, start)
        raw = self.data[self.pos:self.pos + length]
        self.pos += length
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            return repr(raw[:40]) + ("..." if length > 40 else "")

    def expect_string(self, what: str, expected: str) -> str:
        start = self.pos
        value = self.string(what)
        if value != expected:
            raise self.error(f"expected {what} {expected!r} at byte {start}, found {value!r}")
        return value

    def tensor(self, what: str) -> np.ndarray:
        """A resizable_tensor: version 2, num_samples, k, nr, nc, then float32 values."""
        start = self.pos
        self.expect_int(f"{what} (tensor version)", 2)
        shape = tuple(self.nonneg(f"{what} (tensor dimension {d})") for d in ("num_samples", "k", "nr", "nc"))
        count = int(np.prod(shape, dtype=np.int64))
        self._need(4 * count, f"{what} ({_shape_str(shape)} float32 values)", start)
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos)
        self.pos += 4 * count
        return values.astype(np.float32).reshape(shape)   # a copy, native byte order, writable

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """An alias_tensor: version 1, then its shape n, k, nr, nc."""
        self.expect_int(f"{what} (alias_tensor version)", 1)
        return tuple(self.nonneg(f"{what} (alias dimension {d})") for d in ("n", "k", "nr", "nc"))  # type: ignore[return-value]

    def empty_tensor(self, what: str) -> None:
        start = self.pos
        t = self.tensor(what)
        if t.size:
            raise self.error(f"expected {what} to be an empty tensor at byte {start}, found shape {_shape_str(t.shape)}")


# ---------------------------------------------------------------------------------------------
# layer details records


def _conv(r: _Reader, index: int, start: int, tag: str) -> ConvRecord:
    w = f"layer {index} ({tag})"
    params = r.tensor(f"{w} params").reshape(-1)
    num_filters = r.nonneg(f"{w} num_filters")
    nr = r.nonneg(f"{w} nr")
    nc = r.nonneg(f"{w} nc")
    stride = (r.nonneg(f"{w} stride_y"), r.nonneg(f"{w} stride_x"))
    padding = (r.nonneg(f"{w} padding_y"), r.nonneg(f"{w} padding_x"))
    filt_pos = r.pos
    fshape = r.alias(f"{w} filters")
    bshape = r.alias(f"{w} biases")
    for k in range(4):
        r.float_(f"{w} learning-rate/weight-decay multiplier {k + 1}")
    use_bias, use_relu = True, False
    if tag in ("con_5", "con_6"):
        use_bias = r.bool_(f"{w} use_bias")
    if tag == "con_6":
        use_relu = r.bool_(f"{w} use_relu")
    nf_filters = int(np.prod(fshape, dtype=np.int64))
    nf_bias = int(np.prod(bshape, dtype=np.int64))
    if fshape[0] != num_filters or fshape[2:] != (nr, nc):
        raise r.error(
            f"{w} at byte {start}: filter alias {_shape_str(fshape)} (byte {filt_pos}) does not match "
            f"num_filters={num_filters}, nr={nr}, nc={nc}"
        )
    if nf_filters + nf_bias != params.size:
        raise r.error(
            f"{w} at byte {start}: params tensor has {params.size} values, but filters "
            f"{_shape_str(fshape)} + biases {_shape_str(bshape)} need {nf_filters + nf_bias}"
        )
    if nf_bias not in (0, num_filters):
        raise r.error(f"{w} at byte {start}: expected {num_filters} biases, file has {_shape_str(bshape)}")
    filters = params[:nf_filters].reshape(fshape)
    bias = params[nf_filters:].copy() if (nf_bias and use_bias) else None
    return ConvRecord(index, start, tag, filters, bias, stride, padding, use_relu)


def _affine(r: _Reader, index: int, start: int, tag: str) -> AffineRecord:
    w = f"layer {index} ({tag})"
    params = r.tensor(f"{w} params").reshape(-1)
    gshape = r.alias(f"{w} gamma")
    bshape = r.alias(f"{w} beta")
    mode = r.integer(f"{w} mode")
    disabled = r.bool_(f"{w} disabled") if tag == "affine_2" else False
    ng, nb = int(np.prod(gshape, dtype=np.int64)), int(np.prod(bshape, dtype=np.int64))
    if ng != nb or ng + nb != params.size:
        raise r.error(
            f"{w} at byte {start}: params tensor has {params.size} values, but gamma "
            f"{_shape_str(gshape)} + beta {_shape_str(bshape)} need {ng + nb}"
        )
    return AffineRecord(index, start, tag, params[:ng].copy(), params[ng:].copy(), mode, disabled)


def _relu(r: _Reader, index: int, start: int, tag: str) -> ReluRecord:
    disabled = r.bool_(f"layer {index} ({tag}) disabled") if tag == "relu_2" else False
    return ReluRecord(index, start, tag, disabled)


def _pool(r: _Reader, index: int, start: int, tag: str) -> PoolRecord:
    w = f"layer {index} ({tag})"
    nr, nc = r.nonneg(f"{w} nr"), r.nonneg(f"{w} nc")
    stride = (r.nonneg(f"{w} stride_y"), r.nonneg(f"{w} stride_x"))
    padding = (r.nonneg(f"{w} padding_y"), r.nonneg(f"{w} padding_x"))
    kind = "max_pool" if tag.startswith("max") else "avg_pool"
    return PoolRecord(index, start, tag, kind, (nr, nc), stride, padding)


def _add_prev(r: _Reader, index: int, start: int, tag: str) -> AddPrevRecord:
    return AddPrevRecord(index, start, tag)


def _fc(r: _Reader, index: int, start: int, tag: str) -> FcRecord:
    w = f"layer {index} ({tag})"
    num_outputs = r.nonneg(f"{w} num_outputs")
    num_inputs = r.nonneg(f"{w} num_inputs")
    params = r.tensor(f"{w} params").reshape(-1)
    wshape = r.alias(f"{w} weights")
    bshape = r.alias(f"{w} biases")
    bias_mode = r.integer(f"{w} bias mode")
    for k in range(4):
        r.float_(f"{w} learning-rate/weight-decay multiplier {k + 1}")
    use_bias = r.bool_(f"{w} use_bias") if tag == "fc_3" else True
    nw, nb = int(np.prod(wshape, dtype=np.int64)), int(np.prod(bshape, dtype=np.int64))
    if nw != num_inputs * num_outputs or nw + nb != params.size or nb not in (0, num_outputs):
        raise r.error(
            f"{w} at byte {start}: params tensor has {params.size} values, weights alias "
            f"{_shape_str(wshape)}, biases alias {_shape_str(bshape)}, for {num_inputs} inputs "
            f"and {num_outputs} outputs"
        )
    weights = params[:nw].reshape(num_inputs, num_outputs)
    bias = params[nw:].copy() if (nb and use_bias and bias_mode == 0) else None
    return FcRecord(index, start, tag, weights, bias, bias_mode)


_DETAILS = {
    "con_4": _conv, "con_5": _conv, "con_6": _conv,
    "affine_": _affine, "affine_2": _affine,
    "relu_": _relu, "relu_2": _relu,
    "max_pool_2": _pool, "avg_pool_2": _pool,
    "add_prev_": _add_prev,
    "fc_2": _fc, "fc_3": _fc,
}


def _body(r: _Reader, index: int) -> LayerRecord:
    start = r.pos
    tag = r.string(f"layer {index} tag")
    if tag not in _DETAILS:
        raise r.error(
            f"expected a layer tag ({', '.join(repr(t) for t in _DETAILS)}) for layer {index} at byte "
            f"{start}, found {tag!r}"
        )
    rec = _DETAILS[tag](r, index, start, tag)
    w = f"layer {index} ({tag})"
    for name in ("setup_called", "gradient_input_is_stale", "output_and_gradient_disabled"):
        r.bool_(f"{w} {name}")
    for name in ("x_grad", "cached_output", "params_grad"):
        r.empty_tensor(f"{w} {name}")
    return rec


# ---------------------------------------------------------------------------------------------


def _read_header(r: _Reader) -> tuple[str, float, float]:
    try:
        r.expect_int("loss layer version", 1)
        loss = r.expect_string("loss layer tag", LOSS_TAG)
    except CtdError as e:
        raise CtdError(
            "not a dlib face recognition network (.dat of a dlib loss_metric network such as "
            f"dlib_face_recognition_resnet_model_v1.dat): the file does not start with the loss header "
            f"(version 1, {LOSS_TAG!r}): {str(e).removeprefix(f'{r.path}: ')}",
            path=r.path,
        ) from None
    margin = r.float_("loss margin")
    threshold = r.float_("loss distance threshold")
    return loss, margin, threshold


def parse_dlib_bytes(data: bytes, path: str | Path = "<bytes>") -> DlibModel:
    """Parse the bytes of a dlib `loss_metric` network file (see the module docstring)."""
    path = Path(path)
    r = _Reader(data, path)
    loss, margin, threshold = _read_header(r)

    versions: list[int] = []
    while True:
        start = r.pos
        v = r.integer("a layer wrapper version")
        if v not in (1, 2, 3):
            raise r.error(f"expected a layer wrapper version (1, 2 or 3) at byte {start}, found {v}")
        versions.append(v)
        if v == 3:
            break
        if len(versions) > _MAX_VERSIONS:
            raise r.error(f"more than {_MAX_VERSIONS} layer wrapper versions before byte {r.pos}")

    start = r.pos
    input_layer = r.string("input layer tag")
    if input_layer not in ("input_rgb_image_sized", "input_rgb_image"):
        raise r.error(
            f"expected the input layer tag 'input_rgb_image_sized' at byte {start}, found {input_layer!r}"
        )
    means = tuple(float(np.float32(r.float_(f"input layer avg_{c}"))) for c in ("red", "green", "blue"))
    size = None
    if input_layer == "input_rgb_image_sized":
        size = (r.nonneg("input layer nr"), r.nonneg("input layer nc"))

    n_bodies = sum(1 for v in versions if v != 1)
    layers: list[LayerRecord] = []
    sef = 1
    for i in range(n_bodies):
        layers.append(_body(r, i + 1))
        if i == 0:
            sef = r.integer("layer 1 sample_expansion_factor")
    if r.pos != r.n:
        raise r.error(
            f"expected the end of the file after the last layer at byte {r.pos}, "
            f"found {r.n - r.pos} more bytes"
        )
    return DlibModel(
        path=path, file_size=r.n, loss=loss, margin=margin, distance_threshold=threshold,
        versions=versions, input_layer=input_layer, input_means=means, input_size=size,  # type: ignore[arg-type]
        layers=layers, sample_expansion_factor=sef,
    )


def parse_dlib_file(path: str | Path) -> DlibModel:
    """Read and parse a dlib network file (a `.dat`, or its `.dat.bz2` as published by dlib)."""
    path = Path(path)
    if not path.is_file():
        raise CtdError("dlib network file not found" if not path.exists() else "not a file", path=path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CtdError(f"cannot read the dlib network file: {e}", path=path) from None
    if data[:3] == b"BZh":
        try:
            data = bz2.decompress(data)
        except (OSError, ValueError, EOFError) as e:
            raise CtdError(f"cannot decompress the bzip2 file: {e}", path=path) from None
    return parse_dlib_bytes(data, path)
