"""A network in the style of the best published single MNIST model: no pooling, BatchNorm, and
homogeneous vector capsules (Byerly, Kalganova & Dear, "No routing needed between capsules",
Neurocomputing 2021; 99.83% single-model test accuracy, 99.87% as an ensemble).

The design, as the paper describes it (this is our own implementation, not a port):
- a stack of unpadded 3x3 convolutions, each conv -> BatchNorm -> ReLU, channels growing by a
  fixed step (32, 48, ..., 160 at ``width=16``) and *no pooling*: the resolution falls by two
  pixels per layer, 28 -> 26 -> ... -> 10 after nine layers;
- three branches, after every third conv layer. Each branch cuts its feature map into capsules,
  vectors of ``capsule_dim`` neighbouring channels at one position, and maps them to one vector
  per class by a *homogeneous* vector capsule: every input capsule is multiplied element-wise by
  its own learned weight vector for that class and the products are summed (no matrices, no
  routing). A class's branch logit is the sum of its vector's components after BatchNorm;
- the three branches' logits are added.
"""

from __future__ import annotations

import torch
from torch import nn


class HVC(nn.Module):
    """Homogeneous vector capsules: [B, C, H, W] -> [B, K] class logits.

    Capsules are ``dim`` consecutive channels at one position: N = H*W*C/dim capsules of size dim.
    v_k = sum_n u_n * w_kn (element-wise), [B, K, dim]; logit_k = sum(BN(v_k)).
    """

    def __init__(self, channels: int, size: int, num_classes: int, dim: int = 8):
        super().__init__()
        if channels % dim:
            raise ValueError(f"capsule_dim {dim} must divide the branch's {channels} channels")
        self.dim = dim
        n = size * size * channels // dim
        # Byerly et al. initialise the capsule weights to ones: each capsule first counts equally
        self.weight = nn.Parameter(torch.ones(num_classes, n, dim))  # [K, N, D]
        self.bn = nn.BatchNorm1d(num_classes * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        # [B, C, H, W] -> [B, H, W, C] -> [B, N, D]: capsules of `dim` channels at each position
        u = x.permute(0, 2, 3, 1).reshape(b, -1, self.dim)
        v = torch.einsum("bnd,knd->bkd", u, self.weight)  # [B, K, D]
        k = v.shape[1]
        v = self.bn(v.reshape(b, k * self.dim)).reshape(b, k, self.dim)
        return v.sum(-1)  # [B, K]


class HVCNet(nn.Module):
    """Unpadded 3x3 conv stack without pooling, BN + ReLU, HVC branches after every ``per_branch`` layers."""

    def __init__(
        self,
        width: int = 16,
        layers: int = 9,
        per_branch: int = 3,
        capsule_dim: int = 8,
        num_classes: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__()
        if layers < 1 or per_branch < 1 or layers % per_branch:
            raise ValueError(f"layers ({layers}) must be a positive multiple of per_branch ({per_branch})")
        if 28 - 2 * layers < 1:
            raise ValueError(f"{layers} unpadded 3x3 layers leave no pixels of a 28x28 image (at most 13)")
        self.per_branch = per_branch
        chans = [width * (i + 2) for i in range(layers)]  # width 16: 32, 48, ..., 160
        self.convs = nn.ModuleList()
        self.heads = nn.ModuleList()
        c_in, size = 1, 28
        for i, c in enumerate(chans):
            self.convs.append(
                nn.Sequential(nn.Conv2d(c_in, c, 3, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True))
            )
            c_in, size = c, size - 2
            if (i + 1) % per_branch == 0:
                self.heads.append(HVC(c, size, num_classes, capsule_dim))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # [B, 1, 28, 28] -> per branch [B, C_b, H_b, W_b] -> [B, K]; the logits of the branches add up
        logits: torch.Tensor | None = None
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if (i + 1) % self.per_branch == 0:
                out = self.heads[(i + 1) // self.per_branch - 1](self.drop(x))
                logits = out if logits is None else logits + out
        assert logits is not None
        return logits
