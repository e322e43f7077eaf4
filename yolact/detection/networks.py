"""Networks from other engines, callable like the Keras model in inference mode.

float32 [B, S, S, 3] normalized -> {'loc', 'conf', 'coef', 'proto'} numpy arrays; a
`Predictor(None, cfg, network=...)` runs detection and masks on their outputs.
"""

from __future__ import annotations

import numpy as np


class OnnxNetwork:
    """The network exported by `export_savedmodel.py -onnx`, run by onnxruntime on the CPU.

    Callable like the Keras model in inference mode: float32 [B, S, S, 3] normalized
    -> {'loc', 'conf', 'coef', 'proto'} numpy arrays. On 2 CPU threads it ran the
    R50-550 network in 0.88x the time of TF's fastest graph (benchmarks/RESULTS.md).
    """

    OUTPUTS = ("loc", "conf", "coef", "proto")

    def __init__(self, path: str, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("running an ONNX network needs onnxruntime "
                              "(pip install onnxruntime)") from err

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(self.OUTPUTS):
            raise ValueError(f"{path}: expected the outputs {self.OUTPUTS} of an exported "
                             f"YOLACT network, got {names}")
        self.names = names
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images) -> dict:
        feed = {self.input_name: np.asarray(images, np.float32)}
        return dict(zip(self.names, self.session.run(None, feed)))
