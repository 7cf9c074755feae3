"""The example's head (imported only when first used)."""

import torch
from torch import nn


class PooledLinearHead(nn.Module):
    task = "classification"  # `deqbench validate` matches it against the dataset's task

    def __init__(self, channels, num_classes, dropout=0.0):
        super().__init__()  # channels: one count per resolution, as the model passes them
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(sum(channels), num_classes)

    def forward(self, z):
        # z: the DEQ layer's state, a tuple of one (B, C_i, H_i, W_i) tensor per resolution
        pooled = torch.cat([t.mean(dim=(2, 3)) for t in z], dim=1)
        return self.linear(self.dropout(pooled))
