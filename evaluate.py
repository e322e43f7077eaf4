"""COCO box and mask mAP of a model on a TFRecord split.

    python evaluate.py -name shapes -tfrecord_dir data/shapes_tfrecords -weights runs/shapes
    python evaluate.py -name coco -tfrecord_dir /data/coco -weights yolact_base.weights.h5 \
        -output_json results.json -metrics_json metrics.json
    python evaluate.py -name shapes -tfrecord_dir ... -weights ... -benchmark -num_benchmark 50

-weights: a training folder (latest checkpoint, or best/ with -best), a
.weights.h5 file or an official .pth checkpoint.
"""

from yolact.cli.evaluate import main

if __name__ == "__main__":
    main()
