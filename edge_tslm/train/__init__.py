"""The library side of training: examples, optimiser, loop, checkpoints."""
