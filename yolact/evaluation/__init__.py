"""Evaluation: COCO box and mask mAP over a TFRecord split, and per-stage timing."""
