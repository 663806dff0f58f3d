"""Exact cycle model of the Huffman weight path (`terwin.hw.ternary.tilecache`), for `cycles`.

The raw engine's closed form (`terwin.hw.ternary.cycles`) holds while every tile is in its memory;
with the Huffman path the sequencer also waits for a tile to be decoded into the cache, and the
filler waits for the sequencer to reach the group before the one it fills. The two run side by side
from the image's `start`, so this model steps the control of both, cycle by cycle (the control only:
counters, the issue pipeline's valid/last bits, the shadow register; no data), exactly as the RTL:

* cycle 0: `start` (the loader's last beat); the first stage issues from cycle 1;
* the filler takes symbol k in the first cycle >= FIRST_SYMBOL + k in which its group h may be
  written (h <= 1, or the first tile of group h - 1 has been issued: seen two cycles after); the
  tile's last symbol writes it, seen by the sequencer the cycle after;
* the sequencer issues the next tile in a cycle of its stage's RUN when the tile is in the cache and,
  for a job's last tile, R = drain steps cycles or more have passed since the stage's previous last
  tile issued (`TileSequencer`'s gate: the pipeline never stalls); the tile reaches the accumulators
  `pipeline_depth` cycles later, and a job's last tile loads the shadow, which is free or frees in
  that cycle;
* a stage's cycles are its last shadow load + R + the requantizer tail, as in the closed form.
"""
from __future__ import annotations

from .huffman_program import FIRST_SYMBOL


def huffman_stage_cycles(program) -> list[int]:
    """Per stage: its cycles (RUN and DRAIN) with the Huffman weight path."""
    hw = program.huffman_weights
    per_tile = hw.symbols_per_tile
    rows, depth = program.drain_steps, program.pipeline_depth
    og = [int(v) for v in program.og_counts]
    # the producer's state
    ring, n_words = hw.cache_depth, sum(og)
    written = accepted = sym = 0
    cons_base = cons_seen = 0     # cons_seen: cons_base a cycle ago (what `allowed` compares)
    out = []
    x = 1            # absolute cycle (0: start); the first stage's RUN begins at 1
    gword = 0        # first word of the current output group (consumer)

    def produce(x):
        nonlocal written, accepted, sym, cons_seen
        allowed = written < cons_seen + ring      # tile `written` may overwrite tile written - ring
        cons_seen = cons_base
        if written < n_words and x >= FIRST_SYMBOL + accepted and allowed:
            accepted += 1
            if sym == per_tile - 1:
                sym = 0
                written += 1
            else:
                sym += 1

    for s in program.stages:
        # the stage's tiles in issue order: (word, first, last, job_last)
        jobs = s.jobs_per_og
        tiles = []
        for n in s.og_counts:
            n = int(n)
            for _ in range(jobs):
                tiles += [(gword + k, k == 0, k == n - 1) for k in range(n)]
            gword += n
        total_jobs = jobs * len(s.og_counts)
        pipe = [None] * depth            # pipe[-1]: the tile at the accumulators' input
        shadow, row = False, 0
        i, loads, t, c_last, last_issued = 0, 0, 0, None, None
        while c_last is None:
            acc_in = pipe[-1]
            freeing = shadow and row == rows - 1
            assert not (acc_in and shadow and not freeing), "a job's sums reached a busy shadow register"
            ready = i < len(tiles) and written > tiles[i][0]
            gate = i < len(tiles) and (not tiles[i][2] or last_issued is None or t - last_issued >= rows)
            issue = ready and gate
            new_base = None
            if issue:
                word, first, last = tiles[i]
                if first:
                    new_base = word
                if last:
                    last_issued = t
                i += 1
            # the producer sees this cycle's registers (cons_base before this issue)
            produce(x + t)
            if new_base is not None:
                cons_base = new_base
            # registers
            load = bool(acc_in)
            if load:
                shadow, row = True, 0
                loads += 1
                if loads == total_jobs:
                    c_last = t
            elif shadow:
                shadow, row = (False, 0) if freeing else (True, row + 1)
            pipe = [(tiles[i - 1][2]) if issue else None] + pipe[:-1]
            t += 1
        cycles = c_last + rows + program.requant_tail(s)
        # the stage's remaining cycles (drain): the producer goes on
        for tt in range(t, cycles):
            produce(x + tt)
        x += cycles
        out.append(cycles)
    return out
