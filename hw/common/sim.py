"""Run an accelerator top in Amaranth's simulator (component and small whole-network tests).

Speaks only the shared top ports (i_stream, o_stream, busy, cycles, layer_sel/layer_cycles/
layer_mac_cycles), so it drives either engine.
"""
from __future__ import annotations

import random

import numpy as np
from amaranth.sim import Simulator


async def stream_put(ctx, port, value, *, rng=None, pause=0.0):
    """Send one beat on a stream port (valid never waits on ready); `pause`: chance of an idle cycle first."""
    while rng is not None and rng.random() < pause:
        await ctx.tick()
    ctx.set(port.valid, 1)
    ctx.set(port.payload, value)
    await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, *, rng=None, pause=0.0):
    """Receive one beat; `pause`: chance of holding ready low for a cycle."""
    while rng is not None and rng.random() < pause:
        ctx.set(port.ready, 0)
        await ctx.tick()
    ctx.set(port.ready, 1)
    payload, = await ctx.tick().sample(port.payload).until(port.valid)
    ctx.set(port.ready, 0)
    return payload


def preamble(top) -> list[int]:
    """The beats `top` takes after reset before its first image (`Program.preamble`: a design that
    loads its weights at run time), empty for most."""
    program = getattr(top, "program", None)
    return program.preamble() if program is not None else []


def run_images(top, dep, images, *, seed=0, pause=0.0, vcd=None):
    """Stream quantized images [N, C, H, W] through `top` (after its `preamble`, with the same pauses);
    returns (scores [N, n], per-image cycle dicts)."""
    images = np.asarray(images, dtype=np.int64)
    n_scores = int(np.prod(dep.output_shape))
    scores = np.zeros((len(images), n_scores), dtype=np.int64)
    counts = []
    rng_in, rng_out = random.Random(seed), random.Random(seed + 1)
    done = []

    async def producer(ctx):
        for v in preamble(top):
            await stream_put(ctx, top.i_stream, v, rng=rng_in, pause=pause)
        for i, img in enumerate(images):
            for v in img.reshape(-1):
                await stream_put(ctx, top.i_stream, int(v), rng=rng_in, pause=pause)
            # wait until this image's scores have all been taken before the next (one image in flight)
            while len(done) <= i:
                await ctx.tick()

    async def consumer(ctx):
        for i in range(len(images)):
            for j in range(n_scores):
                scores[i, j] = await stream_get(ctx, top.o_stream, rng=rng_out, pause=pause)
            await ctx.tick().until(~top.busy)
            layers = []
            for li, layer in enumerate(dep.layers):
                ctx.set(top.layer_sel, li)
                await ctx.delay(0)
                layers.append({"name": layer.name, "cycles": ctx.get(top.layer_cycles),
                               "mac_cycles": ctx.get(top.layer_mac_cycles)})
            counts.append({"cycles": ctx.get(top.cycles), "layers": layers})
            done.append(i)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return scores, counts


def full_rate_latency(top, dep) -> tuple[int, int]:
    """One image of counting values (0, 1, 2, ...) with both streams at full rate: (cycles from the
    first input beat to `busy` falling, the top's own compute-cycle counter) — the back-to-back image
    period, which the cycle model gives as compute + io_cycles."""
    seen = {}

    async def bench(ctx):
        for v in preamble(top):
            await stream_put(ctx, top.i_stream, v)
        ctx.set(top.o_stream.ready, 1)
        total = 0
        for v in range(int(np.prod(dep.input_shape))):
            ctx.set(top.i_stream.valid, 1)
            ctx.set(top.i_stream.payload, v)
            await ctx.tick()
            total += 1
        ctx.set(top.i_stream.valid, 0)
        while ctx.get(top.busy):
            await ctx.tick()
            total += 1
        seen["total"], seen["compute"] = total, ctx.get(top.cycles)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return seen["total"], seen["compute"]
