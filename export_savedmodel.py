"""Export a SavedModel for TF Serving, and the network as ONNX / LiteRT (fp32, fp16, int8).

    python export_savedmodel.py -name coco -weights yolact_base.weights.h5 -export_dir export
    python export_savedmodel.py -name shapes -weights runs/shapes -export_dir export \
        -version 2 -onnx
    python export_savedmodel.py -name shapes -weights runs/shapes -export_dir export \
        -formats saved_model,onnx,litert,litert_fp16,litert_int8

Writes <export_dir>/<version>/ atomically: saved_model.pb + variables/
(signatures `serving_default`: encoded image bytes -> detections with masks
at the original size, and `serving_preprocessed`: normalized float images +
original sizes -> the same), config.json, and model.onnx with -onnx (the
network only: images -> loc, conf, coef, proto), model*.tflite with -formats (checked
against Keras before they are written). See yolact/serving/exporter.py.
"""

from yolact.cli.export import main

if __name__ == "__main__":
    main()
