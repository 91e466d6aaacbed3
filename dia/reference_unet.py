"""The reference code's DDPM U-Net, rebuilt in plain PyTorch: lucidrains ``Unet`` (0.27.12).

The DIA authors train ``denoising_diffusion_pytorch.Unet(dim=64, dim_mults=(1, 2, 4, 8))``
(`reference/algorithms.md` A1). Our default dissolver is a ``diffusers.UNet2DModel`` of the same
widths (SPEC section 4), a different layout; this module is the reference's own, for the
`diffusion.architecture: reference` option (DECISIONS.md, DIA 20):

* a 7×7 stem; per level two ResNet blocks (weight-standardised 3×3 convolutions, GroupNorm(8),
  SiLU, the time embedding as scale and shift) and a pre-norm residual *linear* attention
  (4 heads × 32), then a 4×4 stride-2 convolution (a 3×3 one at the last level);
* a middle of ResNet block, full attention (ℓ2-normalised q and k scaled by 10), ResNet block;
* the up path symmetric, each block fed a skip, nearest ×2 upsampling then a 3×3 convolution;
* a last ResNet block on the stem's output concatenated, and a 1×1 convolution to 3 channels.

Parameter names and shapes are the package's, so its checkpoints load as they are
(``tests/test_reference_unet.py`` checks the outputs against the package's on fixed weights).
Like a ``UNet2DModel`` the network returns an object whose ``.sample`` is the predicted noise,
so every caller treats the two alike. The package itself needs torchvision, which this project
keeps out of its environment (`reference/ecosystem.md` §0), hence the rebuild.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEADS, HEAD_DIM = 4, 32  # the package's defaults, at every width


@dataclass
class UNetOutput:
    """What ``UNet2DModel`` returns, as far as this project reads it."""

    sample: torch.Tensor


def _eps(x: torch.Tensor) -> float:
    return 1e-5 if x.dtype == torch.float32 else 1e-3


class WeightStandardizedConv2d(nn.Conv2d):
    """A convolution whose kernel is standardised per output channel at every call."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        mean = w.mean(dim=(1, 2, 3), keepdim=True)
        var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
        w = (w - mean) * (var + _eps(x)).rsqrt()
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ChannelLayerNorm(nn.Module):
    """Normalises over channels at each pixel, with a gain and no bias (the package's LayerNorm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, unbiased=False, keepdim=True)
        return (x - x.mean(dim=1, keepdim=True)) * (var + _eps(x)).rsqrt() * self.g


class PreNormResidual(nn.Module):
    """x + fn(norm(x)); named ``fn.fn`` and ``fn.norm`` as the package's Residual(PreNorm(...))."""

    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.fn = nn.Module()
        self.fn.fn, self.fn.norm = fn, ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn.fn(self.fn.norm(x)) + x


class Block(nn.Module):
    def __init__(self, dim: int, dim_out: int, groups: int):
        super().__init__()
        self.proj = WeightStandardizedConv2d(dim, dim_out, 3, padding=1)
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: torch.Tensor, scale_shift=None) -> torch.Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResnetBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, *, time_emb_dim: int, groups: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv2d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, time_emb: torch.Tensor) -> torch.Tensor:
        scale_shift = self.mlp(time_emb)[:, :, None, None].chunk(2, dim=1)
        h = self.block2(self.block1(x, scale_shift))
        return h + self.res_conv(x)


def _heads(t: torch.Tensor) -> torch.Tensor:
    """(b, heads·d, h, w) -> (b, heads, d, h·w)."""
    b, _, h, w = t.shape
    return t.reshape(b, HEADS, -1, h * w)


class LinearAttention(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        hidden = HEADS * HEAD_DIM
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = map(_heads, self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * HEAD_DIM ** -0.5
        k = k.softmax(dim=-1)
        v = v / (h * w)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Attention(nn.Module):
    def __init__(self, dim: int, scale: float = 10.0):
        super().__init__()
        hidden = HEADS * HEAD_DIM
        self.scale = scale
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = map(_heads, self.to_qkv(x).chunk(3, dim=1))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # over positions, as the package
        attn = (torch.einsum("bhdi,bhdj->bhij", q, k) * self.scale).softmax(dim=-1)
        out = torch.einsum("bhij,bhdj->bhid", attn, v)  # (b, heads, h·w, d)
        return self.to_out(out.permute(0, 1, 3, 2).reshape(b, -1, h, w))


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class ReferenceUNet(nn.Module):
    """``Unet(dim, dim_mults, channels=3, resnet_block_groups)`` of denoising_diffusion_pytorch
    0.27.12 (no self-conditioning, no learned variance, fixed sinusoidal time embedding).

    Parameter counts (measured): dim 64 36.25 M (the reference), 32 9.33 M, 8 0.68 M.
    """

    def __init__(self, dim: int = 64, dim_mults: tuple[int, ...] = (1, 2, 4, 8),
                 channels: int = 3, resnet_block_groups: int = 8):
        super().__init__()
        self.init_conv = nn.Conv2d(channels, dim, 7, padding=3)
        dims = [dim, *(dim * m for m in dim_mults)]
        in_out = list(zip(dims[:-1], dims[1:]))
        time_dim = dim * 4
        self.time_mlp = nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))

        def block(a: int, b: int) -> ResnetBlock:
            return ResnetBlock(a, b, time_emb_dim=time_dim, groups=resnet_block_groups)

        self.downs, self.ups = nn.ModuleList(), nn.ModuleList()  # registered in the package's order
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.downs.append(nn.ModuleList([
                block(d_in, d_in), block(d_in, d_in),
                PreNormResidual(d_in, LinearAttention(d_in)),
                nn.Conv2d(d_in, d_out, 3, padding=1) if last else nn.Conv2d(d_in, d_out, 4, 2, 1),
            ]))
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_attn = PreNormResidual(mid, Attention(mid))
        self.mid_block2 = block(mid, mid)
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            up = (nn.Conv2d(d_out, d_in, 3, padding=1) if last else
                  nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                nn.Conv2d(d_out, d_in, 3, padding=1)))
            self.ups.append(nn.ModuleList([
                block(d_out + d_in, d_out), block(d_out + d_in, d_out),
                PreNormResidual(d_out, LinearAttention(d_out)), up,
            ]))
        self.final_res_block = block(dim * 2, dim)
        self.final_conv = nn.Conv2d(dim, channels, 1)

    def forward(self, x: torch.Tensor, timestep: torch.Tensor) -> UNetOutput:
        """ε predicted for x_t at integer timesteps (a tensor of shape (b,) or a scalar)."""
        timestep = torch.as_tensor(timestep, device=x.device)
        if timestep.dim() == 0:
            timestep = timestep.expand(x.shape[0])
        t = self.time_mlp(timestep.float())  # the package embeds the long t promoted to float
        x = self.init_conv(x)
        r = x.clone()
        skips = []
        for block1, block2, attn, down in self.downs:
            x = block1(x, t)
            skips.append(x)
            x = attn(block2(x, t))
            skips.append(x)
            x = down(x)
        x = self.mid_block2(self.mid_attn(self.mid_block1(x, t)), t)
        for block1, block2, attn, up in self.ups:
            x = block1(torch.cat((x, skips.pop()), dim=1), t)
            x = block2(torch.cat((x, skips.pop()), dim=1), t)
            x = up(attn(x))
        x = self.final_res_block(torch.cat((x, r), dim=1), t)
        return UNetOutput(self.final_conv(x))
