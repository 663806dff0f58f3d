"""A plain PyTorch training loop the examples share: your float model, trained your way, before
terwin sees it (terwin then fine-tunes from its state_dict: `weights=` / `--weights`)."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def train_float(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int) -> None:
    """A plain PyTorch training loop (Adam, cross entropy, batches of 64)."""
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y))
        for i in range(0, len(y), 64):
            idx = order[i:i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
