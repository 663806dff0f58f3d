"""Weight averaging of the last fine-tuning epochs (`Schedule.average`, `train.WeightAverage`), both flows."""
import copy

import pytest
import torch
from torch import nn

from terwin.algo.data import load_digits_split
from terwin.algo.ternary import flow as ternary_flow
from terwin.algo.ternary import graph_flow
from terwin.algo.ternary.flow import Schedule, TernaryOptions, average_window, train_ternary
from terwin.algo.train import WeightAverage, reestimate_batchnorm, reproducible
from terwin.errors import TerwinError
from terwin.spec import PE8X8


def test_weight_average_writes_the_mean_of_the_parameters_and_leaves_the_buffers():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    avg = WeightAverage(net)
    for value in (1.0, 2.0, 4.5):
        with torch.no_grad():
            for p in net.parameters():
                p.fill_(value)
            net[1].running_mean.fill_(value)
        avg.add()
    avg.apply()
    assert all(bool((p == 2.5).all()) for p in net.parameters())
    assert bool((net[1].running_mean == 4.5).all())     # buffers are the last state's
    empty = WeightAverage(net)
    empty.apply()                                         # nothing added: nothing changes
    assert all(bool((p == 2.5).all()) for p in net.parameters())


def test_schedule_average_window_and_validation():
    assert average_window(Schedule(finetune_epochs=50, average=10), span=15) == 10
    assert average_window(Schedule(finetune_epochs=50, average=40), span=15) == 36   # final-budget epochs only
    assert average_window(Schedule(finetune_epochs=50, average=0), span=15) == 0
    assert Schedule().average == 20 and average_window(Schedule(), span=15) == 20      # the recipe's default
    assert Schedule(average=10).scaled(0.5).average == 5 and Schedule(average=0).scaled(0.5).average == 0
    with pytest.raises(TerwinError, match="average"):
        Schedule(average=-1)


class Spy(WeightAverage):
    """WeightAverage that keeps what it was given (the parameters at each `add`)."""
    seen: list = []

    def add(self):
        Spy.seen.append([p.detach().clone() for p in self.net.parameters()])
        super().add()


def _check_average(net, seen, window, x_train):
    assert len(seen) == window
    mean = [torch.stack([s[i].double() for s in seen]).mean(dim=0) for i in range(len(seen[0]))]
    for p, m in zip(net.parameters(), mean):
        assert torch.allclose(p.double(), m, rtol=0, atol=1e-6)
    # the batch-norm statistics are those of the averaged weights (re-estimated), not the last epoch's;
    # the first one's input does not depend on the activation scales the flow sets afterwards
    again = copy.deepcopy(net)
    with reproducible():        # the flow's kernels (no oneDNN)
        reestimate_batchnorm(again, x_train)
    first, first_again = (next(m for m in n.modules() if isinstance(m, nn.BatchNorm2d)) for n in (net, again))
    assert torch.equal(first.running_mean, first_again.running_mean)
    assert torch.equal(first.running_var, first_again.running_var)


def test_digits_flow_exports_the_mean_of_the_last_epochs(digits_tensors, monkeypatch):
    monkeypatch.setattr(ternary_flow, "WeightAverage", Spy)
    Spy.seen = []
    sched = Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=4, average=2)
    t = train_ternary(TernaryOptions(spec=PE8X8, schedule=sched, tile_sparsity=0.5, seed=0, quiet=True),
                      digits_tensors)
    assert t.validation["averaged_epochs"] == [3, 4] and "finetune_epoch" not in t.validation
    _check_average(t.model, Spy.seen, 2, digits_tensors.x_train)


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2), 1))


def test_graph_flow_exports_the_mean_of_the_last_epochs(monkeypatch):
    monkeypatch.setattr(graph_flow, "WeightAverage", Spy)
    Spy.seen = []
    torch.manual_seed(0)
    split = load_digits_split()
    options = graph_flow.GraphOptions(spec=PE8X8, tile_sparsity=0.5, seed=0, quiet=True, model_ref="small",
                                      schedule=Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=4, average=3))
    net = graph_flow.prepare(Small(), split, PE8X8)
    with reproducible():        # as graph_flow.compress runs it
        t = graph_flow.train_graph(options, net, split, pretrained=False)
    assert t.validation["averaged_epochs"] == [2, 4] and "finetune_epoch" not in t.validation
    x_train = ternary_flow.Tensors.from_split(split, validation=options.validation_fraction, seed=0).x_train
    _check_average(t.net, Spy.seen, 3, x_train)


def test_graph_flow_distills_from_the_float_model_when_asked():
    """`Schedule.distill` reaches the user-graph flow's fine-tuning: with it the trained weights differ,
    without it (distill 0) two runs are identical."""
    split = load_digits_split()

    def run(distill):
        torch.manual_seed(0)
        options = graph_flow.GraphOptions(spec=PE8X8, tile_sparsity=0.5, seed=0, quiet=True, model_ref="small",
                                          schedule=Schedule(float_epochs=1, joint_epochs=1, finetune_epochs=1,
                                                            distill=distill))
        net = graph_flow.prepare(Small(), split, PE8X8)
        t = graph_flow.train_graph(options, net, split, pretrained=False)
        return [p.detach().clone() for p in t.net.parameters()]

    plain, again, distilled = run(0.0), run(0.0), run(1.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    assert not all(torch.equal(a, b) for a, b in zip(plain, distilled))

