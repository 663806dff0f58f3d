"""The Winograd family's quantizers after export (`terwin compress --family winograd --quantizer ...`).

The exported model's integer weights (Winograd-domain layers and the classifier) are requantized
per layer, within each layer's signed range ±(2^(bits−1) − 1), requantization constants unchanged,
before the model is evaluated and written (docs/codecs.md has the measured numbers):

* ``uniform`` (default): the export's grid; with ``--quant-step K`` > 1 every weight to the nearest
  multiple of K (the baseline of ``dithered``).
* ``ecsq``: entropy-constrained scalar quantization at λ = ``--ecsq-lambda`` (`terwin.algo.ecsq`).
* ``kmeans`` / ``hessian-kmeans`` / ``importance-kmeans``: ``--kmeans-clusters`` levels per layer by
  k-means (`terwin.algo.quantizers.weighted_kmeans`), each weight counting 1, its Hessian-diagonal
  estimate h_i, or Gao et al.'s importance I_i, the centres rounded to integers:
  h_i is the mean over the training images' mini-batches (of `BATCH`) of the squared mini-batch
  gradient — the second moment of gradients that Choi et al. (1612.01543) allow in place of the
  Hessian (Adam's v, without its moving average); I_i = E[(∂ℓ/∂w_i)²] over the training images
  one at a time (Gao et al., ICML 2019). Both are gradients of the cross-entropy at the trained
  model (fake-quantized forward), taken with respect to the integer weight (the float gradient
  times the layer's per-channel scale).
* ``dithered``: randomized uniform quantization with step ``--quant-step`` (1802.02271;
  `terwin.algo.quantizers.dither_encode`), the dither from ``--dither-seed``, which the model file
  holds (`meta["dither"]`: seed, step, and the layers in order; the file stores the indices and the
  seed instead of the weights, format version 4, decoded on load by `terwin.dither`);
  `dither_indices(dep)` regenerates the dither and returns the indices the weights decode from,
  refusing a model whose weights are not exactly step·q − u.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from terwin import codec
from terwin.errors import FormatError

from .. import quantizers as Q
from ..ecsq import ecsq

QUANTIZERS = ("uniform", "ecsq", "kmeans", "hessian-kmeans", "importance-kmeans", "dithered")
GRADIENT_BATCH = 64


def _limits(layer) -> tuple[int, int]:
    qmax = (1 << (layer.weight_bits - 1)) - 1
    return -qmax, qmax


def gradient_moments(net, x: torch.Tensor, y: torch.Tensor, *, per_sample: bool, batch: int = GRADIENT_BATCH) -> dict:
    """E[g²] per weight of every weighted layer (name -> float64 array shaped like its weights), g the
    gradient of the cross-entropy with respect to the weights the forward multiplies (after the layer's
    fake quantizer). `per_sample`: one image at a time (Gao's I_i); else mini-batches of `batch`."""
    captured = {}
    layers = [(name, layer) for name, layer in zip(net.layer_names, net.layers) if hasattr(layer, "weight_quant")]
    saved = {name: layer.weight_quant for name, layer in layers}

    def capture(name, quant):
        def q(w):
            out = quant(w) if quant is not None else w * 1.0
            out.retain_grad()
            captured[name] = out
            return out
        return q

    sums = {}
    was_training = net.training
    net.eval()
    try:
        for name, layer in layers:
            layer.weight_quant = capture(name, saved[name])
        step = 1 if per_sample else batch
        count = 0
        for i in range(0, len(y), step):
            net.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x[i:i + step]), y[i:i + step])
            loss.backward()
            for name, _ in layers:
                g = captured[name].grad.detach().double()
                sums[name] = sums.get(name, 0) + g * g
            count += 1
    finally:
        for name, layer in layers:
            layer.weight_quant = saved[name]
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    return {name: (s / count).numpy() for name, s in sums.items()}


def _integer_importance(layer, moment: np.ndarray) -> np.ndarray:
    """A float-weight gradient moment on the integer weights: times the per-channel scale squared."""
    scale = np.asarray(layer.weight_scale, dtype=np.float64).reshape((-1,) + (1,) * (moment.ndim - 1))
    return moment * scale * scale


def apply(options, dep, net=None, data=None):
    """(the model requantized by `options.quantizer`, what compress.json says about it under
    `quantizer`). The k-means quantizers weighted by gradients need the trained `net` (in its
    quantization-aware state) and `data` (its training images)."""
    name = options.quantizer
    moments = None
    if name in ("hessian-kmeans", "importance-kmeans"):
        moments = gradient_moments(net, data.x_train, data.y_train, per_sample=name == "importance-kmeans")
    layers, index = [], 0
    for layer in dep.layers:
        if hasattr(layer, "weight"):
            lo, hi = _limits(layer)
            w = np.asarray(layer.weight)
            if name == "uniform":
                new = Q.uniform_step(w, options.quant_step, lo=lo, hi=hi)
            elif name == "ecsq":
                new = ecsq(w, options.ecsq_lambda, lo=lo, hi=hi)
            elif name == "kmeans":
                new = Q.weighted_kmeans(w, np.ones(w.shape), options.kmeans_clusters, lo=lo, hi=hi)
            elif name in ("hessian-kmeans", "importance-kmeans"):
                h = _integer_importance(layer, moments[layer.name])
                new = Q.weighted_kmeans(w, h, options.kmeans_clusters, lo=lo, hi=hi)
            elif name == "dithered":
                q = Q.dither_encode(w, options.quant_step, options.dither_seed, index, lo=lo, hi=hi)
                new = Q.dither_decode(q, options.quant_step, options.dither_seed, index)
            else:
                raise ValueError(f"unknown quantizer {name!r}")
            layer = dataclasses.replace(layer, weight=new.astype(w.dtype))
            index += 1
        layers.append(layer)
    meta = dict(dep.meta)
    if name == "dithered":
        meta["dither"] = {"seed": options.dither_seed, "step": options.quant_step,
                          "layers": [layer.name for layer in layers if hasattr(layer, "weight")]}
    out = dep.replace(layers=tuple(layers), meta=meta).validate()
    return out, quantizer_figures(out, name)


def dither_indices(dep) -> dict:
    """The dithered indices of a model written with `--quantizer dithered` (layer name -> array), the
    dither regenerated from the seed the file holds; a FormatError (one line) when the file's weights
    are not exactly those the indices decode to."""
    info = dep.meta.get("dither")
    if not isinstance(info, dict):
        raise FormatError("meta.dither: absent (the model was not written with --quantizer dithered)")
    seed, step, names = info.get("seed"), info.get("step"), info.get("layers")
    weighted = [layer for layer in dep.layers if hasattr(layer, "weight")]
    if names != [layer.name for layer in weighted]:
        raise FormatError("meta.dither.layers: not the model's weighted layers in order")
    out = {}
    for i, layer in enumerate(weighted):
        try:
            out[layer.name] = Q.dither_indices(layer.weight, step, seed, i)
        except ValueError as e:
            raise FormatError(f"{layer.name}: {e}") from None
    return out


def quantizer_figures(dep, name: str) -> dict:
    """Bits per weight of the requantized model: Huffman-coded weight streams with their tables
    (`terwin.codec`; `index_huffman_bits_per_weight`: of the dithered indices for ``dithered``, else
    the same), and the weight arrays — the dithered indices for ``dithered`` — under the universal
    lossless coders (`terwin.algo.quantizers.universal_sizes`)."""
    weighted = list(dep.weighted_layers)
    n = sum(int(np.asarray(layer.weight).size) for layer in weighted)
    rep = codec.stream_report(codec.with_codec(dep, "huffman"))
    arrays = list(dither_indices(dep).values()) if name == "dithered" else [layer.weight for layer in weighted]
    sizes = Q.universal_sizes(arrays)
    coded = rep
    if name == "dithered":      # what the file stores: the indices (the weights carry the dither)
        by_name = dict(zip((layer.name for layer in weighted), arrays))
        as_indices = dep.replace(layers=tuple(
            dataclasses.replace(layer, weight=by_name[layer.name].astype(layer.weight.dtype)) if hasattr(layer, "weight")
            else layer for layer in dep.layers))
        coded = codec.stream_report(codec.with_codec(as_indices, "huffman"))
    return {"name": name, "weights": n,
            "distinct_values": sum(len(np.unique(layer.weight)) for layer in weighted),
            "nonzero_fraction": sum(int(np.count_nonzero(layer.weight)) for layer in weighted) / n,
            "huffman_bits_per_weight": (rep["huffman_bits"] + rep["huffman_table_bits"]) / n,
            "index_huffman_bits_per_weight": (coded["huffman_bits"] + coded["huffman_table_bits"]) / n,
            "universal_bytes": sizes,
            "xz_bits_per_weight": 8 * sizes["xz"] / n, "bz2_bits_per_weight": 8 * sizes["bz2"] / n}


__all__ = ["QUANTIZERS", "gradient_moments", "apply", "dither_indices", "quantizer_figures"]
