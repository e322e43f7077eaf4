"""The YOLACT training loss (official `MultiBoxLoss`, layers/modules/multibox_loss.py)."""

from yolact.losses.yolact_loss import LossParams, YolactLoss, combine, compute_loss, loss_terms

__all__ = ["LossParams", "YolactLoss", "combine", "compute_loss", "loss_terms"]
