"""Bring your own model: train a float network in plain PyTorch, save its state_dict, and hand both
to terwin through its Python API — compression (ternary weights, PE-tile pruning) fine-tunes from
your weights and exports a bit-exact integer model.

    python examples/bring_your_own.py [--out runs/byo] [--epochs 15] [--hardware]

(about half a minute on one core; measured here: float 98.4 %, integer 99.1 %, 31.4x, 0 mismatches).

What it does, step by step:

1. trains `SmallResNet` (a stem conv of 32 channels, one residual block of 64 with a stride-2
   projection shortcut, global average pooling, a linear classifier) on the 8x8 digits in a plain
   PyTorch loop, and saves `OUT/float.pt` with `torch.save(model.state_dict(), ...)`;
2. `terwin.compress(SmallResNet(), data, weights=OUT/float.pt, ...)`: terwin captures the network
   with torch.fx, skips its own float training (your weights are the starting point), then ternary
   quantization-aware training with PE-tile pruning; checkpoints are chosen on a validation split of
   the training images;
3. saves `OUT/model.terwin` and checks the integer model on the test images with `terwin.scores`
   (the NumPy reference, the same integers the hardware computes);
4. with `--hardware`: `terwin.simulate` (cycles), `terwin.generate` (Verilog), `terwin.verify` (the
   RTL under Icarus, every score compared with ==) and `terwin.build_bitstream` (`--board`, default
   the ULX3S-85F; the iCEBreaker's 30 block RAMs are too few for this model: `terwin build` says so in
   one line). Measured: 10,041 cycles per image, 20 test images 0 mismatching scores.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import terwin  # the API (loads torch and the flows on first use)
from float_training import accuracy, train_float  # examples/float_training.py: a plain PyTorch loop


class SmallResNet(nn.Module):
    def __init__(self, classes: int = 10, widths=(32, 64)):
        super().__init__()
        w1, w2 = widths
        self.stem = nn.Conv2d(1, w1, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(w1)
        self.conv1 = nn.Conv2d(w1, w2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w2)
        self.conv2 = nn.Conv2d(w2, w2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.project = nn.Sequential(nn.Conv2d(w1, w2, 1, stride=2, bias=False), nn.BatchNorm2d(w2))
        self.fc = nn.Linear(w2, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)) + self.project(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="train in PyTorch, compress with terwin's Python API")
    parser.add_argument("--out", default="runs/byo", help="folder for float.pt and model.terwin")
    parser.add_argument("--epochs", type=int, default=15, help="float training epochs (plain PyTorch)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="terwin's ternary stages' epochs times this (they start from your weights)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training and test images")
    parser.add_argument("--hardware", action="store_true",
                        help="also simulate cycles, generate and verify the RTL, and build a bitstream")
    parser.add_argument("--board", default="ulx3s-85f",
                        help="board for the bitstream (default ulx3s-85f; the iCEBreaker's 30 block RAMs are "
                             "too few for this model's three live 32x8x8 maps)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)

    # 1. your model, your training loop, your state_dict
    data = terwin.load_data("digits", limit=args.limit)
    torch.manual_seed(0)
    model = SmallResNet()
    train_float(model, data.x_train, data.y_train, epochs=args.epochs)
    float_acc = accuracy(model, data.x_test, data.y_test)
    torch.save(model.state_dict(), out / "float.pt")
    print(f"float model (plain PyTorch): test accuracy {float_acc:.4f}, saved {out / 'float.pt'}")

    # 2. terwin: capture, ternary QAT with PE-tile pruning from your weights, export
    dep, report = terwin.compress(SmallResNet(), data, weights=out / "float.pt", family="ternary",
                                  tile_sparsity=0.5, seed=0, epochs_scale=args.epochs_scale, quiet=True)
    checksum = terwin.save(dep, out / "model.terwin")

    # 3. the integer model on the test images
    int_acc = float((terwin.scores(dep, data.x_test).argmax(1) == data.y_test).mean())
    print(f"integer model {out / 'model.terwin'} ({checksum[:16]}, format version {dep.format_version}): test "
          f"accuracy {int_acc:.4f}, compression {report['compression_ratio']:.1f}x, tile sparsity "
          f"{report['sparsity']:.2f}, reference mismatches {report['reference_mismatches']}")

    # 4. the hardware (needs the ternary engine's graph support, #12)
    if args.hardware:
        cycles = terwin.simulate(dep)
        print(f"cycle model: {cycles['cycles']:,} cycles per image")
        manifest = terwin.generate(dep, out / "rtl", force=True)
        print(f"generated {out / 'rtl' / manifest['verilog']}")
        result = terwin.verify(dep, data.x_test[:20])
        print(f"RTL on 20 test images: {result.mismatches} mismatching scores")
        build = terwin.build_bitstream(dep, board=args.board, out_dir=out / args.board, force=True)
        print(f"bitstream for {args.board}: {build['luts']} LUTs, {build['brams']} block RAMs, "
              f"fmax {build['fmax_mhz']} MHz, timing {'met' if build['timing_met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
