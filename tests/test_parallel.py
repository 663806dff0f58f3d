"""The sweep executor: results in item order on every backend, a failing task named, choices checked."""
from __future__ import annotations

import pytest

from terwin.errors import TerwinError
from terwin.parallel import Executor, TaskFailed, ray_available


def square_after(item):
    import time
    value, delay = item
    time.sleep(delay)
    return value * value


def fails_on_three(value):
    if value == 3:
        raise ValueError("three is not allowed")
    return value


def refuses(value):
    raise TerwinError(f"bad spec {value}")


# later items finish first, so a backend returning in completion order would fail
ITEMS = [(value, 0.05 * (5 - value)) for value in range(6)]


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_results_come_back_in_item_order(backend):
    ticks = []
    ex = Executor(backend=backend, workers=1 if backend == "serial" else 2)
    assert ex.map(square_after, ITEMS, progress=lambda done, total: ticks.append((done, total))) == [
        v * v for v, _ in ITEMS]
    assert ticks[-1] == (6, 6) and [d for d, _ in ticks] == list(range(1, 7))


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_a_failing_task_is_named(backend):
    ex = Executor(backend=backend, workers=1 if backend == "serial" else 2)
    with pytest.raises(TaskFailed, match=r"task 3 \(3\) failed: ValueError: three is not allowed"):
        ex.map(fails_on_three, range(6))
    with pytest.raises(TerwinError, match="bad spec 0"):  # terwin's own errors pass through unchanged
        ex.map(refuses, [0])


def test_choices():
    assert Executor.choose(workers=1).backend == "serial"
    assert Executor.choose(workers=2, backend="process").backend == "process"
    assert Executor.choose(workers=1, backend="process").workers == 1
    with pytest.raises(TerwinError, match="workers must be"):
        Executor(backend="process", workers=0)
    with pytest.raises(TerwinError, match="unknown executor backend"):
        Executor(backend="threads")
    with pytest.raises(TerwinError, match="cannot run on the process backend"):
        Executor.choose(workers=2, ray_address="auto", backend="process")
    assert Executor.map(Executor(), square_after, []) == []


@pytest.mark.skipif(not ray_available(), reason="Ray is a dependency; this guards a bare NumPy-only install")
def test_ray_local_instance_in_order_and_failures_named():
    ex = Executor.choose(workers=2, backend="ray")
    assert ex.map(square_after, ITEMS) == [v * v for v, _ in ITEMS]
    with pytest.raises(TaskFailed, match=r"task 3 \(3\) failed: ValueError: three is not allowed"):
        ex.map(fails_on_three, range(6))
