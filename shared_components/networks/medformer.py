"""MedFormer: a 3D hybrid CNN-transformer for segmentation, after Gao et al. (written from the paper).

Gao Y., Zhou M., Liu D., Yan Z., Zhang S., Metaxas D.N. "A Data-scalable Transformer for Medical Image
Segmentation: Architecture, Model Efficiency, and Benchmark" (arXiv:2203.00131; first released as UTNetV2).
The paper's three ideas, as implemented here:

1. **Inductive bias**: a U-shaped hierarchy whose high-resolution levels are pre-activation residual convolution
   blocks and whose low-resolution levels are transformer blocks with depthwise-convolution projections and
   depthwise-convolution feed-forward layers, so the transformer keeps locality and needs no pre-training.
2. **Bidirectional multi-head attention (B-MHA)** with linear complexity: a small learned *semantic map* of
   ``prod(map_size)`` tokens first gathers from the ``N`` feature-map tokens (``M x N`` attention), then every
   feature token reads the updated semantic map (``N x M``); ``M`` is fixed, so cost grows linearly with ``N``.
   A learned positional bias between each voxel and each semantic token (a coarse per-token field, interpolated
   to the feature grid) is shared by both directions.
3. **Multi-scale semantic map fusion**: the semantic maps of all encoder transformer levels are projected to a
   common width and fused by full self-attention (cheap: only ``levels x M`` tokens), then given to the decoder's
   transformer levels, which attend to them while they refine the upsampled features and skip connections.

The network returns ``[B, out_channels, *spatial]`` in eval mode; with ``deep_supervision`` it returns the heads
of the lower decoder levels too, upsampled and stacked as ``[B, heads, C, *spatial]``, in training mode only
(the format of MONAI's ``DynUNet``, handled by ``shared_components.training.build_loss``). Every spatial size must
be divisible by ``2 ** (len(channels) - 1)``. The module is TorchScript-scriptable.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, *spatial]`` tensor."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.dim()  # explicit non-negative permutations: ONNX runtimes reject negative Transpose axes
        to_last = [0] + [i for i in range(2, n)] + [1]  # noqa: C416 (TorchScript has no list(range))
        to_first = [0, n - 1] + [i for i in range(1, n - 1)]  # noqa: C416
        return self.norm(x.permute(to_last)).permute(to_first)


class ResidualConvBlock(nn.Module):
    """Pre-activation residual block (norm, act, 3x3x3 conv, twice), optionally downsampling by ``stride``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.norm1 = nn.InstanceNorm3d(in_channels, affine=True)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(out_channels, affine=True)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False)
        self.act = nn.LeakyReLU(0.01)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.act(self.norm1(x)))
        out = self.conv2(self.act(self.norm2(out)))
        return out + self.shortcut(x)


class BidirectionalAttention(nn.Module):
    """B-MHA: the semantic map gathers from the feature map, then the feature map reads the updated semantic map.

    Queries, keys and values of the feature map come from a depthwise 3x3x3 convolution followed by a pointwise
    projection; those of the semantic map from linear layers. Both directions share one positional bias.
    """

    def __init__(self, dim: int, heads: int, map_size: Sequence[int], pos_grid: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"channels ({dim}) must be divisible by heads ({heads}).")
        self.heads = heads
        self.dim_head = dim // heads
        self.tokens = int(torch.tensor(list(map_size)).prod())
        self.norm_x = ChannelNorm(dim)
        self.norm_s = nn.LayerNorm(dim)
        self.norm_s2 = nn.LayerNorm(dim)
        self.local = nn.Conv3d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.qkv_x = nn.Conv3d(dim, 3 * dim, 1, bias=False)
        self.q_s = nn.Linear(dim, dim, bias=False)
        self.kv_s = nn.Linear(dim, 2 * dim, bias=False)
        self.out_x = nn.Conv3d(dim, dim, 1)
        self.out_s = nn.Linear(dim, dim)
        # a coarse positional field per (head, semantic token), interpolated to the feature grid
        self.pos = nn.Parameter(torch.zeros(1, heads * self.tokens, pos_grid, pos_grid, pos_grid))
        self.dropout = dropout

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """``[B, L, heads * d]`` -> ``[B, heads, L, d]``."""
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.dim_head).transpose(1, 2)

    def _merge(self, t: torch.Tensor) -> torch.Tensor:
        b, _, n, _ = t.shape
        return t.transpose(1, 2).reshape(b, n, self.heads * self.dim_head)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, c = x.shape[0], x.shape[1]
        spatial = [int(v) for v in x.shape[2:]]
        n = spatial[0] * spatial[1] * spatial[2]
        qkv = self.qkv_x(self.local(self.norm_x(x))).reshape(b, 3 * c, n).transpose(1, 2)
        qx, kx, vx = qkv.chunk(3, dim=-1)
        qx, kx, vx = self._split(qx), self._split(kx), self._split(vx)
        bias = F.interpolate(self.pos, size=spatial, mode="trilinear", align_corners=False)
        bias = bias.reshape(self.heads, self.tokens, n).to(x.dtype)  # [heads, M, N]
        drop = self.dropout if self.training else 0.0

        # 1) aggregation: M semantic queries over N feature keys
        qs = self._split(self.q_s(self.norm_s(s)))
        gathered = F.scaled_dot_product_attention(qs, kx, vx, attn_mask=bias.unsqueeze(0), dropout_p=drop)
        s = s + self.out_s(self._merge(gathered))

        # 2) distribution: N feature queries over the M updated semantic tokens
        ks, vs = self.kv_s(self.norm_s2(s)).chunk(2, dim=-1)
        read = F.scaled_dot_product_attention(
            qx, self._split(ks), self._split(vs), attn_mask=bias.transpose(1, 2).unsqueeze(0), dropout_p=drop
        )
        read = self._merge(read).transpose(1, 2).reshape(b, c, spatial[0], spatial[1], spatial[2])
        return x + self.out_x(read), s


class MedFormerBlock(nn.Module):
    """B-MHA followed by feed-forward layers: a depthwise-convolution MLP for the feature map, a plain MLP for
    the semantic map (left out with ``update_map=False`` where nothing reads the map afterwards)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        map_size: Sequence[int],
        expansion: int = 4,
        dropout: float = 0.0,
        update_map: bool = True,
    ):
        super().__init__()
        self.update_map = update_map
        hidden = dim * expansion
        self.attn = BidirectionalAttention(dim, heads, map_size, dropout=dropout)
        self.ffn_x = nn.Sequential(
            ChannelNorm(dim),
            nn.Conv3d(dim, hidden, 1),
            nn.Conv3d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv3d(hidden, dim, 1),
        )
        self.ffn_s: nn.Module = (
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            if update_map
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, s = self.attn(x, s)
        if self.update_map:
            s = s + self.ffn_s(s)
        return x + self.ffn_x(x), s


class SemanticMapInit(nn.Module):
    """The first semantic map: a depthwise convolution of the features, average-pooled to ``map_size`` tokens,
    plus a learned position embedding per token."""

    def __init__(self, dim: int, map_size: Sequence[int]):
        super().__init__()
        self.map_size = [int(m) for m in map_size]
        self.conv = nn.Sequential(
            ChannelNorm(dim), nn.Conv3d(dim, dim, 3, padding=1, groups=dim), nn.Conv3d(dim, dim, 1)
        )
        self.pos = nn.Parameter(torch.zeros(1, int(torch.tensor(self.map_size).prod()), dim))
        nn.init.trunc_normal_(self.pos, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool3d(self.conv(x), self.map_size)
        return s.flatten(2).transpose(1, 2) + self.pos


class FusionLayer(nn.Module):
    """A pre-norm transformer layer (full self-attention and MLP) over a few tokens."""

    def __init__(self, dim: int, heads: int, expansion: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, dim * expansion), nn.GELU(), nn.Linear(dim * expansion, dim)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        q, k, v = self.qkv(self.norm1(t)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        t = t + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))
        return t + self.mlp(t)


class SemanticMapFusion(nn.Module):
    """Fuse the semantic maps of several levels by full self-attention over all their tokens (``depth`` layers;
    0 passes the maps through unchanged). All maps inform the fusion; only the first ``outputs`` (the levels the
    decoder reads, i.e. all but the deepest) are updated with the fused tokens."""

    def __init__(self, dims: Sequence[int], heads: int, depth: int = 1, expansion: int = 4, outputs: int = -1):
        super().__init__()
        width = max(dims)
        if width % heads:
            raise ValueError(f"fusion width {width} must be divisible by heads ({heads}).")
        n_in = len(dims) if depth > 0 else 0
        n_out = (len(dims) if outputs < 0 else outputs) if depth > 0 else 0
        self.inputs = nn.ModuleList([nn.Linear(d, width) for d in dims[:n_in]])
        self.outputs = nn.ModuleList([nn.Linear(width, d) for d in dims[:n_out]])
        if depth > 0:  # 3D, so that channels_last_3d leaves it alone
            self.level = nn.Parameter(nn.init.trunc_normal_(torch.zeros(len(dims), 1, width), std=0.02))
        else:
            self.register_buffer("level", torch.zeros(0), persistent=False)
        self.layers = nn.ModuleList([FusionLayer(width, heads, expansion) for _ in range(depth)])
        self.depth = depth

    def forward(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.depth == 0:
            return maps
        parts = [proj(maps[i]) for i, proj in enumerate(self.inputs)]
        tokens = torch.stack(parts, dim=1) + self.level  # [B, levels, M, width]
        b, levels, m, width = tokens.shape
        t = tokens.reshape(b, levels * m, width)
        for layer in self.layers:
            t = layer(t)
        fused = t.reshape(b, levels, m, width)
        out = [maps[i] + proj(fused[:, i]) for i, proj in enumerate(self.outputs)]
        for i in range(len(out), levels):
            out.append(maps[i])
        return out


class EncoderLevel(nn.Module):
    """One encoder level: an optional strided residual block, then residual or MedFormer blocks."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        blocks: int,
        transformer: bool,
        first_transformer: bool,
        heads: int,
        map_size: Sequence[int],
        expansion: int,
        dropout: float,
        map_read_after: bool = True,
    ):
        super().__init__()
        self.transformer = transformer
        self.down = ResidualConvBlock(in_channels, out_channels, stride)
        n_conv = 0 if transformer else max(blocks - 1, 0)
        self.convs = nn.ModuleList([ResidualConvBlock(out_channels, out_channels) for _ in range(n_conv)])
        n = blocks if transformer else 0
        self.blocks = nn.ModuleList(
            [
                MedFormerBlock(
                    out_channels, heads, map_size, expansion, dropout, update_map=map_read_after or k < n - 1
                )
                for k in range(n)
            ]
        )
        self.init: nn.Module = SemanticMapInit(out_channels, map_size) if first_transformer else nn.Identity()
        self.first = first_transformer
        self.map_proj: nn.Module = (
            nn.Linear(in_channels, out_channels) if transformer and not first_transformer else nn.Identity()
        )

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.down(x)
        for conv in self.convs:
            x = conv(x)
        if self.transformer:
            s = self.init(x) if self.first else self.map_proj(s)
            for block in self.blocks:
                x, s = block(x, s)
        return x, s


class DecoderLevel(nn.Module):
    """One decoder level: transposed-convolution upsampling, concatenation with the skip connection, a residual
    block, then residual or MedFormer blocks (these attend to the fused semantic map of the level)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        blocks: int,
        transformer: bool,
        heads: int,
        map_size: Sequence[int],
        expansion: int,
        dropout: float,
    ):
        super().__init__()
        self.transformer = transformer
        self.up = nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2, bias=False)
        self.merge = ResidualConvBlock(2 * out_channels, out_channels)
        n_conv = 0 if transformer else max(blocks - 1, 0)
        self.convs = nn.ModuleList([ResidualConvBlock(out_channels, out_channels) for _ in range(n_conv)])
        n = blocks if transformer else 0
        self.blocks = nn.ModuleList(  # the map is not read after the last block
            [MedFormerBlock(out_channels, heads, map_size, expansion, dropout, update_map=k < n - 1) for k in range(n)]
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self.merge(torch.cat([self.up(x), skip], dim=1))
        for conv in self.convs:
            x = conv(x)
        for block in self.blocks:
            x, s = block(x, s)
        return x


class MedFormer(nn.Module):
    """3D MedFormer (see the module docstring).

    Args:
        in_channels, out_channels: image channels and output classes.
        channels: feature width per level, full resolution first; each further level halves the resolution.
        conv_levels: how many of the highest-resolution levels are convolutional (the rest use MedFormer blocks).
        encoder_blocks: blocks per encoder level; decoder_blocks: blocks per decoder level (all but the deepest).
        heads: attention heads per level (an int for all).
        map_size: semantic map grid (``prod(map_size)`` tokens per level).
        fusion_depth: self-attention layers of the semantic map fusion (0 disables fusion).
        expansion: feed-forward expansion ratio; dropout: attention dropout.
        deep_supervision: in training mode, also return heads of ``deep_supr_num`` lower decoder levels.
    """

    # TorchScript needs the element type of lists that may be empty (hence no `from __future__ import annotations`)
    map_levels: list[int]
    aux_levels: list[int]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: Sequence[int] = (32, 64, 128, 256, 320),
        conv_levels: int = 2,
        encoder_blocks: Sequence[int] = (1, 1, 2, 2, 2),
        decoder_blocks: Sequence[int] = (1, 1, 2, 2),
        heads: int | Sequence[int] = (1, 2, 4, 8, 8),
        map_size: Sequence[int] = (4, 4, 4),
        fusion_depth: int = 1,
        expansion: int = 4,
        dropout: float = 0.0,
        deep_supervision: bool = False,
        deep_supr_num: int = 2,
        spatial_dims: int = 3,
    ):
        super().__init__()
        levels = len(channels)
        if spatial_dims != 3:
            raise ValueError("MedFormer is implemented for 3D images only (spatial_dims=3).")
        if levels < 2 or not 0 <= conv_levels < levels:
            raise ValueError(f"need at least 2 levels and 0 <= conv_levels < {levels}, got conv_levels={conv_levels}.")
        heads = [heads] * levels if isinstance(heads, int) else list(heads)
        if len(encoder_blocks) != levels or len(decoder_blocks) != levels - 1 or len(heads) != levels:
            raise ValueError(
                f"encoder_blocks and heads need {levels} values and decoder_blocks {levels - 1} "
                f"(one per level of channels={list(channels)})."
            )
        if conv_levels == 0:
            raise ValueError("the full-resolution level must be convolutional: use conv_levels >= 1.")
        self.levels = levels
        self.divisor = 2 ** (levels - 1)
        self.stem = nn.Conv3d(in_channels, channels[0], 3, padding=1, bias=False)
        self.map_levels = list(range(conv_levels, levels))
        read = len([i for i in self.map_levels if i < levels - 1])  # levels whose decoder stage reads its map
        depth = fusion_depth if read > 0 else 0
        self.encoder = nn.ModuleList()
        for i in range(levels):
            self.encoder.append(
                EncoderLevel(
                    channels[max(i - 1, 0)],
                    channels[i],
                    1 if i == 0 else 2,
                    encoder_blocks[i],
                    transformer=i >= conv_levels,
                    first_transformer=i == conv_levels,
                    heads=heads[i],
                    map_size=map_size,
                    expansion=expansion,
                    dropout=dropout,
                    # the deepest map is read afterwards only by the fusion; the others by the next level
                    map_read_after=i < levels - 1 or depth > 0,
                )
            )
        self.fusion = SemanticMapFusion([channels[i] for i in self.map_levels], heads[-1], depth, expansion, read)
        self.decoder = nn.ModuleList()  # deepest first
        for i in range(levels - 2, -1, -1):
            self.decoder.append(
                DecoderLevel(
                    channels[i + 1],
                    channels[i],
                    decoder_blocks[i],
                    transformer=i >= conv_levels,
                    heads=heads[i],
                    map_size=map_size,
                    expansion=expansion,
                    dropout=dropout,
                )
            )
        self.head = nn.Sequential(nn.InstanceNorm3d(channels[0], affine=True), nn.LeakyReLU(0.01))
        self.out = nn.Conv3d(channels[0], out_channels, 1)
        self.deep_supervision = deep_supervision
        n_aux = min(deep_supr_num, levels - 2) if deep_supervision else 0
        # decoder stages (deepest first) whose outputs get an extra head: the n_aux just below the last one
        self.aux_levels = list(range(levels - 2 - n_aux, levels - 2))
        self.aux = nn.ModuleList([nn.Conv3d(channels[levels - 2 - j], out_channels, 1) for j in self.aux_levels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [int(v) for v in x.shape[2:]]
        for v in size:
            if v % self.divisor != 0:
                raise ValueError(f"MedFormer input size {size} must be divisible by {self.divisor} on every axis.")
        x = self.stem(x)
        skips: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        s = torch.zeros(1)
        for i, level in enumerate(self.encoder):
            x, s = level(x, s)
            skips.append(x)
            if i in self.map_levels:
                maps.append(s)
        maps = self.fusion(maps)
        outputs: list[torch.Tensor] = []
        for j, level in enumerate(self.decoder):
            i = self.levels - 2 - j  # resolution level this decoder stage produces
            s_i = maps[i - self.map_levels[0]] if i in self.map_levels else s
            x = level(x, skips[i], s_i)
            if self.training and self.deep_supervision and j in self.aux_levels:
                outputs.append(x)
        y = self.out(self.head(x))
        if not (self.training and self.deep_supervision):
            return y
        aux_out: list[torch.Tensor] = []
        for k, aux in enumerate(self.aux):  # deepest first
            aux_out.append(F.interpolate(aux(outputs[k]), size=size, mode="trilinear", align_corners=False))
        heads = [y]
        for k in range(len(aux_out) - 1, -1, -1):  # full resolution first, then coarser, as DynUNet
            heads.append(aux_out[k])
        return torch.stack(heads, dim=1)
