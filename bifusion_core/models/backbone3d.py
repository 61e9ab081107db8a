"""Sparse 3D U-Nets on MinkowskiEngine (ResNet blocks, 4 stride-2 stages, skip concatenation).

The named variants differ only in depth (blocks per stage) and width (channels per stage),
so they are table entries, not classes. Input is always a ``SparseTensor`` built from
already-quantised coordinates: the TensorField→sparse() route was seen to break the
stride-8 skip concatenation (coordinate-map key mismatch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..compat import import_minkowski

ME = import_minkowski()


@dataclass(frozen=True)
class UNetSpec:
    layers: tuple[int, ...]  # blocks in 4 encoder + 4 decoder stages
    planes: tuple[int, ...]  # channels of those 8 stages
    init_dim: int


ARCHITECTURES: dict[str, UNetSpec] = {
    "Res16UNet34C": UNetSpec((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96), 32),
    "MinkUNet18A": UNetSpec((2,) * 8, (32, 64, 128, 256, 128, 128, 96, 96), 32),
    "MinkUNet14A": UNetSpec((1,) * 8, (32, 64, 128, 256, 128, 128, 96, 96), 32),
    "MinkUNetTiny": UNetSpec((1,) * 8, (16, 32, 48, 64, 48, 48, 32, 32), 16),
}


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int):
        super().__init__()
        self.conv1 = ME.MinkowskiConvolution(inplanes, planes, kernel_size=3, dimension=3)
        self.norm1 = ME.MinkowskiBatchNorm(planes)
        self.conv2 = ME.MinkowskiConvolution(planes, planes, kernel_size=3, dimension=3)
        self.norm2 = ME.MinkowskiBatchNorm(planes)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(
                ME.MinkowskiConvolution(inplanes, planes, kernel_size=1, dimension=3),
                ME.MinkowskiBatchNorm(planes),
            )

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + residual)


def _stage(inplanes: int, planes: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[BasicBlock(inplanes if i == 0 else planes, planes) for i in range(blocks)])


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, transpose: bool = False) -> nn.Sequential:
    conv = ME.MinkowskiConvolutionTranspose if transpose else ME.MinkowskiConvolution
    return nn.Sequential(
        conv(cin, cout, kernel_size=kernel, stride=stride, dimension=3),
        ME.MinkowskiBatchNorm(cout),
        ME.MinkowskiReLU(inplace=True),
    )


class SparseUNet(nn.Module):
    """Encoder strides 2/4/8/16, decoder back to stride 1 with skips; ``out_channels`` = last plane."""

    def __init__(self, arch: str, in_channels: int = 3, width: float = 1.0):
        super().__init__()
        spec = ARCHITECTURES[arch]
        planes = [max(8, int(round(p * width))) for p in spec.planes]
        init_dim = max(8, int(round(spec.init_dim * width)))
        self.stem = _conv_bn_relu(in_channels, init_dim, kernel=5)
        self.down = nn.ModuleList()
        self.enc = nn.ModuleList()
        skip_dims = [init_dim]
        cin = init_dim
        for i in range(4):
            self.down.append(_conv_bn_relu(cin, cin, kernel=2, stride=2))
            self.enc.append(_stage(cin, planes[i], spec.layers[i]))
            cin = planes[i]
            skip_dims.append(cin)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for i in range(4):
            self.up.append(_conv_bn_relu(cin, planes[4 + i], kernel=2, stride=2, transpose=True))
            skip = skip_dims[3 - i]
            self.dec.append(_stage(planes[4 + i] + skip, planes[4 + i], spec.layers[4 + i]))
            cin = planes[4 + i]
        self.out_channels = cin

    def forward(self, x):
        x = self.stem(x)
        skips = [x]
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        skips.pop()  # the bottleneck is x itself
        for up, dec in zip(self.up, self.dec):
            x = dec(ME.cat(up(x), skips.pop()))
        return x


def _coordinate_manager(device: torch.device):
    """On CPU, one whose kernels use torch's thread count: by default MinkowskiEngine sets OpenMP to
    every core (or OMP_NUM_THREADS as it was at import) inside each kernel, which also overrides
    ``torch.set_num_threads`` for the rest of the step."""
    if device.type != "cpu":
        return None
    return ME.CoordinateManager(D=3, num_threads=torch.get_num_threads(), coordinate_map_type=ME.CoordinateMapType.CPU)


class Backbone3D(nn.Module):
    """U-Net → 1×1 sparse conv + BN + ReLU → ``feat_dim`` per voxel (normalised later, per point)."""

    def __init__(self, arch: str, in_channels: int, feat_dim: int, width: float = 1.0):
        super().__init__()
        self.unet = SparseUNet(arch, in_channels, width)
        self.head = _conv_bn_relu(self.unet.out_channels, feat_dim, kernel=1)

    def forward(self, coords: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """``coords`` (M,4) int batched voxel coordinates, ``feats`` (M,C) → (M, feat_dim) rows in input order.

        Always fp32: MinkowskiEngine has no half-precision kernels, so autocast is off in here
        and the input is cast at the boundary to the U-Net's own dtype (the output is fp32 under
        any ``train.amp``; fp64 only for a model made ``.double()``, as the rank-equivalence test does).
        """
        dtype = next(self.parameters()).dtype
        with torch.autocast(feats.device.type, enabled=False):
            x = ME.SparseTensor(
                features=feats.to(dtype), coordinates=coords, coordinate_manager=_coordinate_manager(feats.device)
            )
            out = self.head(self.unet(x))
            # Rows of the output follow the input map; align them to the order of ``coords``.
            return out.features_at_coordinates(coords.to(dtype))
