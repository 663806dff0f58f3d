"""The issue logic: which tile the PE array computes next."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from . import layouts


class TileSequencer(wiring.Component):
    """Walks a stage's jobs and issues their tiles, at most one a cycle.

    For each output group (pe_rows channels), for each pooled output pixel (row by row), for each
    position in its pool window (a *job*), the group's kept tiles: weight words `weight_addr` =
    the group's first word, +1, ... The words per group come from the `og_table` memory.

    The pipeline behind it never stalls: the requantizers drain a job's sums in R =
    `TernaryProgram.drain_steps` cycles, so a job's last tile is held back (bubbles, `issue` low)
    until R cycles after the previous job's last tile was issued. Its sums then reach the
    accumulators exactly when the shadow register frees, as a stall there would have let them:
    the same cycles, but no enable fanning out to every register of the MAC pipeline (the critical
    net of large arrays). The first job of a stage waits for nothing (the stage before has drained).

    * `k` (in): the stage's constants (`StageConstants.k`, from `TernaryProgram.stage_table()`);
    * `ready` (in): the weight path can take a tile this cycle (the Huffman tile cache; else 1);
    * `start_image` (in): back to the first stage's first word and group; `start_stage` (in): back to
      the first job (the words and groups continue where the stage before ended); either starts
      issuing from the next cycle until the stage's last tile (`stage_done`): the sequencer keeps its
      own running flag, so its issue logic waits on no signal from the controller (on large arrays
      the controller and the sequencer sit far apart); `end_image` (in): rewind the group table
      (before the next image's `start_image`);
    * `tile` (out): the tile issued this cycle (`layouts.tile_layout`; `valid` low: none),
      `weight_addr` (out): its word;
    * `issue` (out): a tile is issued this cycle; `stage_done` (out): it is the stage's last.
    """

    def __init__(self, program, *, constants):
        self._program = program
        words = max(1, program.weight_word_count)
        super().__init__({
            "k": In(constants),
            "ready": In(1),
            "start_image": In(1),
            "start_stage": In(1),
            "end_image": In(1),
            "tile": Out(layouts.tile_layout(program)),
            "weight_addr": Out(range(max(2, words))),
            "issue": Out(1),
            "stage_done": Out(1),
            # with the Huffman weight path: the tile issued this cycle (if any) is its output group's last
            **({"group_end": Out(1)} if program.huffman else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p, k = self._program, self.k
        st = p.stages
        m.submodules.og_table = table = p.memory("og_table").memory()
        group_words = table.read_port(domain="comb")
        max_words = int(p.og_counts.max())
        group = Signal(len(self.tile.job.group))
        group_next = Signal(range(len(p.og_counts) + 1))            # global number of the next group
        # the current group's words minus one (at least one is kept): comparing `tile_n` with it directly
        # keeps a subtractor's carry chain off the issue path (an iCE40 critical path)
        tile_last_n = Signal(range(max_words + 1))
        tile_n = Signal(range(max_words + 1))
        word = Signal(range(max(2, p.weight_word_count + 1)))
        group_first_word = Signal.like(word)
        win_y, win_x = Signal(range(max(s.pool_k for s in st) + 1)), Signal(range(max(s.pool_k for s in st) + 1))
        out_y = Signal(range(max(s.out_h for s in st) + 1))
        out_x = Signal(range(max(s.out_w for s in st) + 1))
        # input coordinates: of the pooled pixel (y_base, x_base) and of the window position within it
        cbits, pbits = layouts.coord_bits(p), layouts.pixel_bits(p)
        y_base, x_base, win_dy, win_dx = (Signal(signed(cbits), name=n) for n in ("y_base", "x_base", "win_dy", "win_dx"))
        # ... and the row parts of their addresses (y * W)
        y_base_addr, win_dy_addr = Signal(signed(pbits), name="y_base_addr"), Signal(signed(pbits), name="win_dy_addr")
        pixel = Signal.like(self.tile.job.pixel)
        channel_base = Signal.like(self.tile.job.channel_base)
        m.d.comb += group_words.addr.eq(group_next)

        job_counters = [group, tile_n, win_y, win_x, out_y, out_x, y_base, x_base, win_dy, win_dx, y_base_addr,
                        win_dy_addr, pixel, channel_base]
        # last_tile == (tile_n == tile_last_n), kept in a register (set wherever either changes): it gates
        # `issue`, whose fan-out (every counter of this sequencer) must not wait for a comparator
        last_tile = Signal()
        running = Signal()
        with m.If(self.stage_done):
            m.d.sync += running.eq(0)
        with m.If(self.start_image | self.start_stage):
            m.d.sync += [c.eq(0) for c in job_counters] + [running.eq(1)]
            m.d.sync += last_tile.eq(tile_last_n == 0)
        with m.If(self.start_image):
            m.d.sync += [word.eq(0), group_first_word.eq(0), tile_last_n.eq(group_words.data - 1), group_next.eq(1),
                         last_tile.eq(group_words.data == 1)]
        with m.If(self.end_image):
            m.d.sync += group_next.eq(0)

        last_ok = self._last_tile_gate(m, last_tile)
        window_last = (win_y == k.window_last) & (win_x == k.window_last)
        pixel_last = (out_y == k.row_last) & (out_x == k.col_last)
        group_last = group == k.group_last
        t = self.tile
        if p.huffman:
            m.d.comb += self.group_end.eq(last_tile & window_last & pixel_last)
        m.d.comb += [
            self.weight_addr.eq(word), self.issue.eq(running & self.ready & (~last_tile | last_ok)),
            t.valid.eq(self.issue), t.first.eq(tile_n == 0), t.last.eq(last_tile),
            t.iy0.eq(y_base + win_dy - k.pad), t.ix0.eq(x_base + win_dx - k.pad),
            t.pixel_base.eq(y_base_addr + win_dy_addr + x_base + win_dx - k.pad_offset),
            t.job.group.eq(group), t.job.channel_base.eq(channel_base), t.job.pixel.eq(pixel),
            t.job.window_first.eq((win_y == 0) & (win_x == 0)), t.job.window_last.eq(window_last),
            t.job.stage_last.eq(window_last & pixel_last & group_last),
        ]
        with m.If(self.issue):
            with m.If(~last_tile):
                m.d.sync += [tile_n.eq(tile_n + 1), word.eq(word + 1), last_tile.eq(tile_n + 1 == tile_last_n)]
            with m.Else():  # the job's last tile: next window position, pooled pixel, output group
                m.d.sync += [tile_n.eq(0), word.eq(group_first_word), last_tile.eq(tile_last_n == 0)]
                with m.If(win_x != k.window_last):
                    m.d.sync += [win_x.eq(win_x + 1), win_dx.eq(win_dx + k.conv_step)]
                with m.Else():
                    m.d.sync += [win_x.eq(0), win_dx.eq(0)]
                    with m.If(win_y != k.window_last):
                        m.d.sync += [win_y.eq(win_y + 1), win_dy.eq(win_dy + k.conv_step),
                                     win_dy_addr.eq(win_dy_addr + k.conv_row_step)]
                    with m.Else():
                        m.d.sync += [win_y.eq(0), win_dy.eq(0), win_dy_addr.eq(0), pixel.eq(pixel + 1)]
                        with m.If(out_x != k.col_last):
                            m.d.sync += [out_x.eq(out_x + 1), x_base.eq(x_base + k.pool_step)]
                        with m.Else():
                            m.d.sync += [out_x.eq(0), x_base.eq(0)]
                            with m.If(out_y != k.row_last):
                                m.d.sync += [out_y.eq(out_y + 1), y_base.eq(y_base + k.pool_step),
                                             y_base_addr.eq(y_base_addr + k.pool_row_step)]
                            with m.Else():  # output group done: the next group's words follow this one's
                                m.d.sync += [out_y.eq(0), y_base.eq(0), y_base_addr.eq(0), pixel.eq(0),
                                             word.eq(word + 1), group_first_word.eq(word + 1),
                                             tile_last_n.eq(group_words.data - 1), group_next.eq(group_next + 1),
                                             last_tile.eq(group_words.data == 1)]
                                with m.If(((group + 1) & k.group_channel_mask) == 0):
                                    m.d.sync += channel_base.eq(channel_base + k.group_channel_step)
                                with m.If(~group_last):
                                    m.d.sync += group.eq(group + 1)
                                with m.Else():
                                    m.d.comb += self.stage_done.eq(1)
        if p.has_residual:
            self._residual_counters(m, job_counters, last_tile, win_x, win_y, out_x, out_y, group)
        return m

    def _last_tile_gate(self, m, last_tile):
        """High when a job's last tile may issue: R = drain_steps cycles or more after the last one
        (or the first job of a stage or image). A register, counted down by `gap`."""
        steps = self._program.drain_steps
        if steps == 1:
            return 1
        gap = Signal(range(steps), name="drain_gap")        # cycles still to wait, from the next one
        ok = Signal(init=1, name="last_ok")
        with m.If(self.issue & last_tile):
            m.d.sync += [gap.eq(steps - 1), ok.eq(0)]
        with m.Else():
            m.d.sync += ok.eq(gap <= 1)
            with m.If(gap != 0):
                m.d.sync += gap.eq(gap - 1)
        with m.If(self.start_image | self.start_stage):
            m.d.sync += [gap.eq(0), ok.eq(1)]
        return ok

    def _residual_counters(self, m, job_counters, last_tile, win_x, win_y, out_x, out_y, group):
        """The job's conv output pixel (before the fused pool) and its group's channel offset in the
        residual map, stepped alongside the counters above: conv_pixel = (out_y * pool_s + win_y) *
        conv_w + out_x * pool_s + win_x."""
        k, job = self.k, self.tile.job
        row, col, win_row = (Signal(len(job.conv_pixel), name=n) for n in ("res_row", "res_col", "res_win_row"))
        base = Signal.like(job.res_address)
        m.d.comb += [job.conv_pixel.eq(row + col + win_row + win_x), job.res_address.eq(base)]
        with m.If(self.start_image | self.start_stage):
            m.d.sync += [row.eq(0), col.eq(0), win_row.eq(0), base.eq(0)]
        with m.If(self.issue & last_tile & (win_x == k.window_last)):
            with m.If(win_y != k.window_last):
                m.d.sync += win_row.eq(win_row + k.res_row)
            with m.Else():
                m.d.sync += win_row.eq(0)
                with m.If(out_x != k.col_last):
                    m.d.sync += col.eq(col + k.res_pool_step)
                with m.Else():
                    m.d.sync += col.eq(0)
                    with m.If(out_y != k.row_last):
                        m.d.sync += row.eq(row + k.res_pool_row_step)
                    with m.Else():
                        m.d.sync += row.eq(0)
                        with m.If(((group + 1) & k.res_channel_mask) == 0):
                            m.d.sync += base.eq(base + k.res_channel_step)
