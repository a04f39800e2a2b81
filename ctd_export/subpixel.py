"""The head rewrite of the export graph: each stride-2 4x4 deconvolution (ConvTranspose2d, kernel 4,
stride 2, padding 1: the SimpleBaseline head's) as one convolution with 4 x C_out output channels
followed by DepthToSpace, the same layer to float rounding.

    head_op "convtranspose"  ConvTranspose (the trained modules as they are)
            "subpixel"       Conv 3x3, padding 1, 4*C_out channels -> DepthToSpace(2, CRD)
            "subpixel2x2"    Conv 2x2, padding 1, 4*C_out channels -> DepthToSpace(2, CRD) -> Slice [1:-1]

Why: a runtime's convolution kernels are its best ones (ONNX Runtime's CPU provider runs Conv in
its blocked NCHWc layout, fuses Conv + ReLU, and has an integer Conv for QDQ graphs, none of which
it has for ConvTranspose; docs/int8.md), and DepthToSpace is a copy.

The decomposition. y = ConvTranspose(x) with kernel w [C, O, 4, 4], stride 2, padding 1 is

    y[o, Y, X] = sum_{c, ky, kx} w[c, o, ky, kx] x[c, iy, ix]   where Y = 2 iy - 1 + ky (X alike),

so an output row Y = 2m + dy (phase dy in {0, 1}) sees only the kernel rows ky = dy + 1 - 2r of
the input rows iy = m + r, r in {dy - 1, dy}: phase 0 reads offsets {-1, 0} (ky 3, 1), phase 1
reads {0, +1} (ky 2, 0). Each of the four phases (dy, dx) is a 2x2 convolution of x, and

- `subpixel`: a 3x3 convolution with padding 1 reads offsets {-1, 0, +1}; tap t = r + 1 of phase
  dy holds kernel row ky = dy + 3 - 2t (t in {dy, dy + 1}) and the third tap is zero. One Conv
  gives all four phases (2.25x the multiply-adds of the deconvolution: 5 of 9 taps are zero);
- `subpixel2x2`: a 2x2 convolution with padding 1 gives (H+1) x (W+1) windows; window j, tap s
  reads row j - 1 + s, so phase dy at m is window j = m + dy with ky = 3 - dy - 2s (the
  deconvolution's multiply-adds, plus one border row and column). Its channels hold the phases
  at swapped sub-positions (1 - dy, 1 - dx), so DepthToSpace puts phase dy of window m + dy at
  row 2(m + dy) + 1 - dy = Y + 1: the output is the DepthToSpace result without its border.

Output channel o*4 + sy*2 + sx holds sub-position (sy, sx) of channel o: DepthToSpace's CRD
order, which is what `F.pixel_shuffle` computes and both torch exporters write as
DepthToSpace(mode="CRD"). A BatchNorm2d right after the deconvolution (in a Sequential, eval statistics) is folded into the
convolution's weights and bias, in float64, and a ReLU after them is applied before DepthToSpace
(it commutes with the rearrangement), so the graph reads Conv -> Relu -> DepthToSpace: the pair a
runtime fuses (ONNX Runtime's FusedConv, QLinearConv with uint8 activations; TensorRT's Conv +
ReLU). Both are replaced by Identity.

`rewritten_head(predictor, head_op)` returns a rewritten deep copy (the trained predictor, which
the parity gate's PyTorch reference runs, is left as it is).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from ctd_export.onnx_export import HEAD_OPS
from ctd_runtime.errors import CtdError

KERNELS = {"subpixel": 3, "subpixel2x2": 2}
PHASES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))  # (dy, dx), CRD order dy*2 + dx


def is_rewritable(module: nn.Module) -> bool:
    """True for a ConvTranspose2d that the rewrite covers: kernel 4, stride 2, padding 1, no output
    padding, no dilation, one group, zero padding."""
    return (
        isinstance(module, nn.ConvTranspose2d)
        and tuple(module.kernel_size) == (4, 4)
        and tuple(module.stride) == (2, 2)
        and tuple(module.padding) == (1, 1)
        and tuple(module.output_padding) == (0, 0)
        and tuple(module.dilation) == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
    )


def _kernel_row(kernel: int, phase: int, tap: int) -> int | None:
    """The deconvolution's kernel row (or column) at `tap` of the sub-pixel convolution for output
    `phase`; None where that tap is zero (see the module docstring)."""
    row = phase + 3 - 2 * tap if kernel == 3 else 3 - phase - 2 * tap
    return row if 0 <= row <= 3 and (kernel == 2 or tap in (phase, phase + 1)) else None


def subpixel_weight(weight: torch.Tensor, kernel: int = 3) -> torch.Tensor:
    """ConvTranspose2d weight [C, O, 4, 4] -> Conv weight [4*O, C, k, k] (k = `kernel`, 3 or 2), output
    channel o*4 + sy*2 + sx holding phase (dy, dx) of channel o at sub-position (sy, sx) = (dy, dx)
    for k = 3, (1 - dy, 1 - dx) for k = 2. A pure rearrangement: every value is copied, none
    computed."""
    if weight.ndim != 4 or tuple(weight.shape[2:]) != (4, 4):
        raise ValueError(f"expected a 4x4 ConvTranspose2d weight [C, O, 4, 4], got {tuple(weight.shape)}")
    if kernel not in (2, 3):
        raise ValueError(f"sub-pixel kernel must be 3 or 2, not {kernel}")
    c, o = int(weight.shape[0]), int(weight.shape[1])
    out = weight.new_zeros(o, 2, 2, c, kernel, kernel)
    w = weight.permute(1, 0, 2, 3)  # [O, C, 4, 4]
    for dy, dx in PHASES:
        sy, sx = (dy, dx) if kernel == 3 else (1 - dy, 1 - dx)  # the 2x2 form's sub-positions are swapped
        for ty in range(kernel):
            ky = _kernel_row(kernel, dy, ty)
            for tx in range(kernel):
                kx = _kernel_row(kernel, dx, tx)
                if ky is not None and kx is not None:
                    out[:, sy, sx, :, ty, tx] = w[:, :, ky, kx]
    return out.reshape(4 * o, c, kernel, kernel)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) per channel of an eval-mode BatchNorm2d, float64: bn(z) = scale z + shift."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


class SubPixelDeconv(nn.Module):
    """ConvTranspose2d(k=4, s=2, p=1) [+ BatchNorm2d] [+ ReLU] as Conv (k x k, padding 1, 4*O
    channels) [+ ReLU] and DepthToSpace (pixel shuffle, CRD); `from_conv_transpose` builds it from
    trained modules."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, out_channels: int, relu: bool = False) -> None:
        super().__init__()
        self.out_channels = int(out_channels)
        self.kernel = int(weight.shape[-1])
        self.relu = bool(relu)
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)

    @classmethod
    def from_conv_transpose(cls, deconv: nn.ConvTranspose2d, bn: nn.BatchNorm2d | None = None,
                            kernel: int = 3, relu: bool = False) -> "SubPixelDeconv":
        """The rewrite of a trained deconvolution, with the eval statistics of `bn` folded in and,
        with `relu`, the ReLU that follows them."""
        if not is_rewritable(deconv):
            raise ValueError(f"not a ConvTranspose2d(kernel 4, stride 2, padding 1) without groups: {deconv}")
        o = deconv.out_channels
        dtype = deconv.weight.dtype
        weight = subpixel_weight(deconv.weight.detach().double(), kernel)
        bias = deconv.bias.detach().double() if deconv.bias is not None else weight.new_zeros(o)
        if bn is not None:
            scale, shift = _bn_affine(bn)
            weight = weight * scale.repeat_interleave(4)[:, None, None, None]
            bias = bias * scale + shift
        return cls(weight.to(dtype), bias.repeat_interleave(4).to(dtype), o, relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, padding=1)
        if self.relu:
            y = F.relu(y)
        y = F.pixel_shuffle(y, 2)
        return y[:, :, 1:-1, 1:-1] if self.kernel == 2 else y

    def extra_repr(self) -> str:
        relu = " -> ReLU" if self.relu else ""
        return f"{self.weight.shape[1]}, {self.out_channels}, conv {self.kernel}x{self.kernel}{relu} -> DepthToSpace(2)"


def _foldable(module: nn.Module | None, channels: int) -> bool:
    return (isinstance(module, nn.BatchNorm2d) and module.num_features == channels and not module.training
            and module.running_mean is not None and module.running_var is not None)


def _absorbed(parent: nn.Module, names: list[str], i: int, channels: int, fold_bn: bool) -> tuple[list[str], bool]:
    """(names of the modules after the deconvolution at `i` that its rewrite takes over: an
    eval BatchNorm2d with `fold_bn`, then a ReLU; whether that BatchNorm is among them). Only in a
    Sequential is "after" known."""
    if not isinstance(parent, nn.Sequential):
        return [], False
    taken: list[str] = []
    nxt = parent._modules[names[i + 1]] if i + 1 < len(names) else None
    folds = fold_bn and _foldable(nxt, channels)
    if folds:
        taken.append(names[i + 1])
    j = i + 1 + len(taken)
    if j < len(names) and isinstance(parent._modules[names[j]], nn.ReLU):
        taken.append(names[j])
    return taken, folds


def rewrite_deconvolutions(module: nn.Module, head_op: str, fold_bn: bool = True) -> int:
    """Replace, in place, every rewritable ConvTranspose2d inside `module` by its `head_op` rewrite;
    in a Sequential it also takes over an eval BatchNorm2d that follows (with `fold_bn`; folded)
    and then a ReLU (applied before DepthToSpace, where a runtime fuses it into the Conv; ReLU
    commutes with the rearrangement), each replaced by Identity. How many were replaced;
    "convtranspose" replaces nothing."""
    if head_op not in HEAD_OPS:
        raise CtdError(f"unknown head op {head_op!r}; choose from {', '.join(HEAD_OPS)}")
    if head_op == "convtranspose":
        return 0
    count = 0
    for parent in list(module.modules()):
        names = list(parent._modules)
        for i, name in enumerate(names):
            child = parent._modules[name]
            if child is None or not is_rewritable(child):
                continue
            taken, folds = _absorbed(parent, names, i, child.out_channels, fold_bn)
            bn = parent._modules[taken[0]] if folds else None
            relu = len(taken) > int(folds)
            parent._modules[name] = SubPixelDeconv.from_conv_transpose(child, bn, KERNELS[head_op], relu)
            for later in taken:
                parent._modules[later] = nn.Identity()
            count += 1
    return count


def rewritten_head(predictor: nn.Module, head_op: str, fold_bn: bool = True) -> nn.Module:
    """A deep copy of `predictor` (eval mode) with its deconvolutions rewritten as `head_op` says; the
    predictor itself for "convtranspose". CtdError when a rewrite is asked for and the predictor has
    no deconvolution it covers."""
    if head_op == "convtranspose":
        return predictor
    twin = copy.deepcopy(predictor).eval()
    if rewrite_deconvolutions(twin, head_op, fold_bn) == 0:
        raise CtdError(f"head op {head_op!r}: the predictor has no ConvTranspose2d(kernel 4, stride 2, padding 1) "
                       "to rewrite; export it with --head-op convtranspose")
    return twin
