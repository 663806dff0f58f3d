"""ResNet-8 for 32x32 images: a stem conv, three residual stages (16, 32, 64 channels; the second and
third halve the map with a stride-2 conv and a 1x1 stride-2 projection shortcut), global average
pooling and a linear classifier. The network is plain PyTorch (nothing in it knows terwin).

As a `terwin compress` model (the factory takes no arguments):

    terwin compress --family ternary --model examples/resnet8.py:resnet8 --data digits32 --out runs/resnet8

Run as a script it does the same through the Python API (`terwin.compress`), then saves the model:

    python examples/resnet8.py [--out runs/resnet8] [--epochs-scale 1.0] [--tile-sparsity 0.5]

With `--float-epochs N` the float network is first trained in a plain PyTorch loop
(examples/float_training.py) and saved as OUT/float.pt; terwin then fine-tunes from those weights
only (no float training of its own), as `terwin compress ... --weights OUT/float.pt` does.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import terwin  # the API, for main() (the model classes below do not use it)
from float_training import accuracy, train_float  # examples/float_training.py: a plain PyTorch loop


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); the shortcut is x itself, or a 1x1 conv +
    BN when the block changes the channels or the resolution."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet8(nn.Module):
    def __init__(self, in_channels: int = 1, classes: int = 10, widths=(16, 32, 64)):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.layer1 = BasicBlock(w1, w1, 1)
        self.layer2 = BasicBlock(w1, w2, 2)
        self.layer3 = BasicBlock(w2, w3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(x)


def resnet8() -> nn.Module:
    """The factory `terwin compress --model examples/resnet8.py:resnet8` calls: digits32 (1 channel, 10 classes)."""
    return ResNet8()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="compress ResNet-8 on digits32 with terwin's Python API")
    parser.add_argument("--out", default="runs/resnet8", help="folder for model.terwin and compress.json")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="every training stage's epochs times this")
    parser.add_argument("--tile-sparsity", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training and test images")
    parser.add_argument("--float-epochs", type=int, default=None,
                        help="train the float model in plain PyTorch for N epochs first (saved as OUT/float.pt); "
                             "terwin then only fine-tunes from it")
    args = parser.parse_args(argv)
    data = terwin.load_data("digits32", limit=args.limit)
    weights = None
    if args.float_epochs is not None:
        torch.set_num_threads(1)
        torch.manual_seed(args.seed)
        model = resnet8()
        train_float(model, data.x_train, data.y_train, epochs=args.float_epochs)
        weights = Path(args.out) / "float.pt"
        weights.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), weights)
        print(f"float model (plain PyTorch, {args.float_epochs} epochs): test accuracy "
              f"{accuracy(model, data.x_test, data.y_test):.4f}, saved {weights}")
    dep, report = terwin.compress(resnet8(), data, family="ternary", tile_sparsity=args.tile_sparsity,
                                  seed=args.seed, epochs_scale=args.epochs_scale, weights=weights)
    checksum = terwin.save(dep, f"{args.out}/model.terwin")
    print(f"{args.out}/model.terwin ({checksum[:16]}): float {report['float_accuracy']:.4f}, integer "
          f"{report['accuracy']:.4f}, compression {report['compression_ratio']:.1f}x, tile sparsity "
          f"{report['sparsity']:.3f}, reference mismatches {report['reference_mismatches']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
