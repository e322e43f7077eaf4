"""Raw network outputs -> instances: detection (Fast NMS), masks at the original size,
the `Instances` structure, the `Predictor` and networks from other engines."""
