"""Training: the distributed step (`Trainer`), the loop (`train`), the optimizer and
the learning-rate schedules.

Imports nothing heavy itself: `yolact.training.schedules` is read by the config."""
