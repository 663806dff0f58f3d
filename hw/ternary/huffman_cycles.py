"""Exact cycle model of the Huffman weight path (`terwin.hw.ternary.tilecache`), for `cycles`.

The raw engine's closed form (`terwin.hw.ternary.cycles`) holds while every tile is in its memory;
with the Huffman path the sequencer also waits for a tile to be decoded into the rings, and the
filler waits for the sequencer to free the entry it writes. The two run side by side
from the image's `start`, so this model steps the control of both, cycle by cycle (the control only:
counters, the issue pipeline's valid/last bits, the shadow register; no data), exactly as the RTL:

* cycle 0: `start` (the loader's last beat); the first stage issues from cycle 1;
* the filler takes symbol k in the first cycle >= FIRST_SYMBOL + k in which its tile t may be
  written (t < cons_base + depth, cons_base the word after the last output group the sequencer
  finished, as it was the cycle before: a group's last issue is seen two cycles after); the tile's
  last symbol writes it, seen by the sequencer the cycle after;
* the side walker looks at tile-mask position p in cycle p + 1 at the earliest: a pruned position
  it passes, a visited one it writes (side entry s) when s < cons_base + depth, as above, then
  moves on; the sequencer sees the entry two cycles after (its `ready` compares the side count of
  the cycle before);
* the sequencer issues the next tile in a cycle of its stage's RUN when the tile is in both rings and,
  for a job's last tile, R = drain steps cycles or more have passed since the stage's previous last
  tile issued (`TileSequencer`'s gate: the pipeline never stalls); the tile reaches the accumulators
  `pipeline_depth` cycles later, and a job's last tile loads the shadow, which is free or frees in
  that cycle;
* a stage's cycles are its last shadow load + R + the requantizer tail, as in the closed form.
"""
from __future__ import annotations

from .huffman_program import FIRST_SYMBOL, tile_positions


def huffman_stage_cycles(program) -> list[int]:
    """Per stage: its cycles (as the RTL's per-stage counter counts them) with the Huffman weight path."""
    hw = program.huffman_weights
    per_tile = hw.symbols_per_tile
    rows, depth = program.drain_steps, program.pipeline_depth
    og = [int(v) for v in program.og_counts]
    # the producer's state
    ring, n_words = hw.cache_depth, sum(og)
    written = accepted = sym = 0
    mask = [bool(v) for v in tile_positions(program)]
    pos = side = side_seen = 0    # the side walker: its position in the tile mask, side entries written
    cons_base = cons_seen = 0     # the word after the last finished group; cons_seen: a cycle ago
    out = []
    x = 1            # absolute cycle (0: start); the first stage's RUN begins at 1
    gword = 0        # first word of the current output group (consumer)

    def produce(x):
        nonlocal written, accepted, sym, cons_seen, pos, side, side_seen
        side_seen = side                          # the sequencer sees a side entry a cycle late
        allowed = written < cons_seen + ring      # tile `written` may overwrite tile written - ring
        side_allowed = side < cons_seen + ring
        cons_seen = cons_base
        if pos < len(mask) and (not mask[pos] or side_allowed):
            side += mask[pos]
            pos += 1
        if written < n_words and x >= FIRST_SYMBOL + accepted and allowed:
            accepted += 1
            if sym == per_tile - 1:
                sym = 0
                written += 1
            else:
                sym += 1

    for s in program.stages:
        # the stage's tiles in issue order: (word, last: a job's last tile, the group's last tile)
        jobs = s.jobs_per_og
        tiles = []
        for n in s.og_counts:
            n = int(n)
            for job in range(jobs):
                tiles += [(gword + k, k == n - 1, k == n - 1 and job == jobs - 1) for k in range(n)]
            gword += n
        total_jobs = jobs * len(s.og_counts)
        pipe = [None] * depth            # pipe[-1]: the tile at the accumulators' input
        shadow, row = False, 0
        i, loads, t, c_last, last_issued = 0, 0, 0, None, None
        while c_last is None:
            acc_in = pipe[-1]
            freeing = shadow and row == rows - 1
            assert not (acc_in and shadow and not freeing), "a job's sums reached a busy shadow register"
            ready = i < len(tiles) and min(written, side_seen) > tiles[i][0]
            gate = i < len(tiles) and (not tiles[i][1] or last_issued is None or t - last_issued >= rows)
            issue = ready and gate
            new_base = None
            if issue:
                word, last, group_end = tiles[i]
                if group_end:
                    new_base = word + 1
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
            pipe = [(tiles[i - 1][1]) if issue else None] + pipe[:-1]
            t += 1
        cycles = c_last + rows + program.requant_tail(s)
        # the stage's remaining cycles (drain): the producer goes on
        for tt in range(t, cycles):
            produce(x + tt)
        x += cycles
        out.append(cycles)
    return out
