"""Export a SavedModel for TF Serving (and optionally the network as ONNX).

    python export_savedmodel.py -name coco -weights yolact_base.weights.h5 -export_dir export
    python export_savedmodel.py -name shapes -weights runs/shapes -export_dir export \
        -version 2 -onnx

Writes <export_dir>/<version>/ atomically: saved_model.pb + variables/
(signatures `serving_default`: encoded image bytes -> detections with masks
at the original size, and `serving_preprocessed`: normalized float images +
original sizes -> the same), config.json, and model.onnx with -onnx (the
network only: images -> loc, conf, coef, proto). See yolact/serving/saved_model.py.
"""

from yolact.cli.export import main

if __name__ == "__main__":
    main()
