"""Train YOLACT on TFRecords (tf.distribute: MirroredStrategy over all local GPUs).

    python train.py -name shapes -tfrecord_dir data/shapes_tfrecords -weights runs/shapes
    python train.py -name coco -tfrecord_dir /data/coco_tfrecords -weights runs/coco \
        -batch_size 8      # backbone: the official resnet101_reducedfc.pth, fetched once
    python train.py -name my_dataset -tfrecord_dir /data/mine -init_weights yolact_base
    python train.py -name my_dataset -tfrecord_dir /data/mine ...   # custom: classes from
        # <tfrecord_dir>/label_map.json, written by data.coco_tfrecord_creator

Resumes from the latest checkpoint in -weights unless -noresume. Ctrl-C / SIGTERM
saves a checkpoint before exiting. TensorBoard logs: <weights>/logs.
"""

from yolact.cli.train import main

if __name__ == "__main__":
    main()
