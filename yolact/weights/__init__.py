"""Weights in and out: the .pth reader (no torch), the torch layout, the official
converter and its verification, .weights.h5 files and training checkpoints."""
