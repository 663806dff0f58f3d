"""The real accelerator behind the UART bridge: image bytes in on the line, score bytes out,
compared with `terwin.sim.reference.forward` using `==`."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from terwin.hw.boards import UARTBridge
from terwin.engines import build_top
from terwin.sim import reference
from terwin.spec import PRESETS
from terwin.synthetic import random_deployment
from test_uart import line_recv, line_send

DIV = 4


@pytest.mark.parametrize("seed", [0, 1])
def test_bridge_with_accelerator_matches_reference(seed):
    dep = random_deployment(PRESETS["pe4x4"], seed=seed, input_shape=(1, 6, 6),
                            topology=(("conv2d", 8), ("maxpool2d", 2), ("linear", 5)))
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(2, *dep.input_shape))
    images[0, 0, 0, :3] = [0, 255, 128]
    expected = reference.forward(dep, images)
    assert expected.shape[:2] == (2, 5)

    dut = UARTBridge(build_top(dep), divisor=DIV)
    n = dut.score_bytes
    got = []

    async def host(ctx):
        for img in images:
            await line_send(ctx, dut.rx, bytes(int(v) for v in img.reshape(-1)), divisor=DIV)
            raw = await line_recv(ctx, dut.tx, 5 * n, divisor=DIV, timeout=20_000)
            got.append([int.from_bytes(raw[i:i + n], "little", signed=True) for i in range(0, len(raw), n)])
        assert ctx.get(dut.rx_error) == 0

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.run()
    want = expected.reshape(2, 5).tolist()
    assert got == want, f"expected {want}, got {got}"
