"""The one training loop of every compression family, and what goes with it.

`train` is mini-batch training with Adam and a cosine learning-rate decay. What the families do
differently is a parameter, never a second loop:

* `lr_decay`: ``"cosine"`` (closed form, base · ½(1 + cos(π t / T)), `LambdaLR`; the Winograd family)
  or ``"cosine-annealing"`` (torch's `CosineAnnealingLR`, which updates the rate recursively and so
  rounds differently; the ternary family). Both are kept so that every recorded model stays bit for
  bit what it was.
* `augment`: random ±1-pixel shifts (ternary) or none (Winograd).
* `penalty` (+ `penalty_params` at their own `penalty_lr`): a term added to the loss every step —
  a pruning regularizer, or a regularizer with learnable coefficients.
* hooks: `on_epoch(epoch, epochs)` before each epoch (anneal a threshold, ramp a pruning target),
  `after_step()` after each optimizer step (re-apply masks), `after_epoch(epoch, epochs)` after each
  epoch — the place for validation (e.g. checkpoint choice on a held-out split).
* `teacher`/`distill_weight`: knowledge distillation (an experiment knob of the ternary schedule).

`Tensors.from_split(split, validation=F, seed=S)` carves the validation images out of the training
images (`terwin.algo.data.validation_split`: stratified, seeded) — the one helper every flow uses, so
every choice made during training (checkpoint selection) is judged on them and the test images are
read only for the report. `evaluate` is accuracy in eval mode (`accuracy`: the same, batched, as a
plain fraction); `BestCheckpoint` keeps the state with the best validation accuracy;
`reestimate_batchnorm` recomputes batch-norm running statistics for the weights as they are now;
`WeightAverage` averages the parameters over the last epochs instead of keeping one of them.
Runs are deterministic: seed the global RNG before building the model, pass one `torch.Generator`
for batch order and augmentation, and run under `reproducible()` (one thread, no oneDNN; `terwin.numerics`).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from terwin import numerics

from .data import validation_split
from .quant import ActQuant

LR_DECAYS = ("cosine", "cosine-annealing")


@dataclass(frozen=True)
class Tensors:
    """The data split as torch tensors (float32 images [N, C, H, W], int64 labels); x_val / y_val:
    the validation images (None when none were carved out)."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    @classmethod
    def from_split(cls, split, *, validation: float = 0.0, seed: int = 0) -> "Tensors":
        """`split` as tensors; with `validation` > 0 that fraction of the training images (stratified,
        chosen by `seed`) becomes the validation set and leaves the training set."""
        val = (None, None)
        if validation:
            split, val = validation_split(split, fraction=validation, seed=seed)
        arrays = (split.x_train, split.y_train, split.x_test, split.y_test, *val)
        return cls(*(None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_val, y_val); a ValueError when no validation images were carved out."""
        if self.x_val is None:
            raise ValueError("no validation split: build the tensors with Tensors.from_split(split, validation=F)")
        return self.x_val, self.y_val


def scaled_epochs(epochs: int, scale: float) -> int:
    """A stage's epochs times `scale` (the families' --*-epochs-scale), rounded, at least 1."""
    return max(1, round(epochs * scale))


@contextlib.contextmanager
def reproducible():
    """Training that gives the same model on every run and, with `terwin.numerics` pinned, on every
    x86-64 machine: one intra-op thread (no oversubscription on shared machines either) and no oneDNN
    (its convolutions are JIT-compiled and blocked for the processor they run on; without it torch
    convolves by im2col and MKL's GEMM, which MKL_CBWR fixes). A bad TERWIN_NUMERICS is refused here,
    before any training."""
    numerics.mode()
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, dtype: torch.dtype = torch.float64) -> float:
    """Accuracy of `model` in eval mode (its training mode is restored afterwards).

    dtype: the precision of the mean. The ternary family records float32 means (its model files
    carry the float accuracy in their metadata), the Winograd family float64 ones.
    """
    was = model.training
    model.eval()
    acc = float((model(x).argmax(dim=1) == y).to(dtype).mean())
    model.train(was)
    return acc


@torch.no_grad()
def accuracy(net: nn.Module, x, y, *, batch: int = 256) -> float:
    """Accuracy in eval mode, `batch` images at a time (the training mode is restored)."""
    was = net.training
    net.eval()
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    correct = sum(int((net(x[i:i + batch]).argmax(dim=1) == y[i:i + batch]).sum()) for i in range(0, len(y), batch))
    net.train(was)
    return correct / len(y)


class BestCheckpoint:
    """The state with the highest validation accuracy seen (the later one on a tie)."""

    def __init__(self, net: nn.Module, x_val, y_val):
        self.net, self.x, self.y = net, x_val, y_val
        self.accuracy = -1.0
        self.epoch = None
        self.state = None

    def offer(self, epoch: int) -> float:
        acc = accuracy(self.net, self.x, self.y)
        if acc >= self.accuracy:
            self.accuracy, self.epoch = acc, epoch
            self.state = copy.deepcopy(self.net.state_dict())
        return acc

    def restore(self) -> None:
        if self.state is not None:
            self.net.load_state_dict(self.state)


class WeightAverage:
    """The mean of a model's parameters over the states `add`ed (stochastic weight averaging, Izmailov
    et al., UAI 2018): `apply()` writes it into the model. Only parameters are averaged (for a
    parametrized layer its latent weight, so a ternary layer's codes come from the mean latent
    weight); buffers — batch-norm statistics, activation scales, masks — stay as they are, and the
    batch-norm statistics must be re-estimated for the averaged weights (`reestimate_batchnorm`)."""

    def __init__(self, net: nn.Module):
        self.net = net
        self.total: list[torch.Tensor] | None = None
        self.count = 0

    @torch.no_grad()
    def add(self) -> None:
        params = [p.detach().double() for p in self.net.parameters()]
        self.total = params if self.total is None else [t + p for t, p in zip(self.total, params)]
        self.count += 1

    @torch.no_grad()
    def apply(self) -> None:
        if not self.count:
            return
        for p, t in zip(self.net.parameters(), self.total):
            p.copy_((t / self.count).to(p.dtype))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, *, batch: int = 2048) -> None:
    """Recompute every batch norm's running mean and variance from `x` (one training-mode pass,
    `batch` images at a time: exactly x's statistics when they fit in one batch, else the mean of the
    batches') for the weights as they are now. During ternary training the codes
    flip from step to step and the running averages (momentum 0.1) lag behind them, so eval mode
    sees statistics of weights that are gone (docs/ternary.md, "Why"). Nothing else changes: the
    activation quantizers' calibration is paused for the pass, the training mode is restored."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    quants = [(m, m.calibrating) for m in model.modules() if isinstance(m, ActQuant)]
    was = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None          # cumulative average: one batch -> exactly its statistics
    for m, _ in quants:
        m.calibrating = False
    model.train()
    for i in range(0, len(x), batch):
        model(x[i:i + batch])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m, calibrating in quants:
        m.calibrating = calibrating
    model.train(was)


def train(model: nn.Module, data: Tensors, *, epochs: int, lr: float, generator: torch.Generator,
          batch_size: int = 64, lr_decay: str = "cosine", augment: bool = False,
          penalty: Callable[[], torch.Tensor] | None = None, penalty_params: Iterable[torch.Tensor] = (),
          penalty_lr: float | None = None, on_epoch: Callable[[int, int], None] | None = None,
          after_step: Callable[[], None] | None = None, after_epoch: Callable[[int, int], None] | None = None,
          teacher: nn.Module | None = None, distill_weight: float = 0.0, temperature: float = 4.0,
          progress: Callable[..., None] | None = None) -> None:
    """Train `model` on data.x_train for `epochs` epochs; the model is left in eval mode.

    Adam over the model's trainable parameters at `lr` (plus `penalty_params` at `penalty_lr` as a
    second group), `lr_decay` over all steps, batches in `generator`'s random order.
    loss = cross entropy [+ distill_weight · T² · KL(teacher_T ‖ student_T)] [+ penalty()].
    progress(epoch, epochs, loss=mean loss of the epoch).
    """
    if lr_decay not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {LR_DECAYS}, not {lr_decay!r}")
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    penalty_params = list(penalty_params)
    if penalty_params:
        groups.append({"params": penalty_params, "lr": lr if penalty_lr is None else penalty_lr})
    opt = torch.optim.Adam(groups)
    n = data.x_train.shape[0]
    steps = epochs * math.ceil(n / batch_size)
    if lr_decay == "cosine-annealing":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, steps) / steps)))
    model.train()
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch, epochs)
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            xb, yb = data.x_train[idx], data.y_train[idx]
            if augment:
                xb = random_shift(xb, generator=generator)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None and distill_weight > 0:
                with torch.no_grad():
                    soft = F.softmax(teacher(xb) / temperature, dim=1)
                loss = loss + distill_weight * temperature ** 2 * F.kl_div(
                    F.log_softmax(logits / temperature, dim=1), soft, reduction="batchmean")
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if after_step is not None:
                after_step()
            total += float(loss.detach()) * len(idx)
        if progress is not None:
            progress(epoch + 1, epochs, loss=total / n)
        if after_epoch is not None:
            after_epoch(epoch, epochs)
    model.eval()


def random_shift(x: torch.Tensor, *, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Shift each image by (dy, dx) in [-max_shift, max_shift], filling with zeros."""
    n = x.shape[0]
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
    h, w = x.shape[-2:]
    rows = (dy[:, None] + torch.arange(h)[None, :])               # [n, h]
    cols = (dx[:, None] + torch.arange(w)[None, :])               # [n, w]
    batch = torch.arange(n)[:, None, None]
    # advanced indices around a slice: the result is [n, h, w, C]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


__all__ = ["Tensors", "LR_DECAYS", "scaled_epochs", "reproducible", "evaluate", "accuracy", "BestCheckpoint", "WeightAverage", "train",
           "random_shift", "reestimate_batchnorm"]
