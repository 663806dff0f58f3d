"""terwin.algo: PyTorch side — data, reference nets, ternary/pruning and Winograd-sparse training, export."""
