"""Train YOLACT on TFRecords (tf.distribute: MirroredStrategy over all local GPUs).

    python train.py -name shapes -tfrecord_dir data/shapes_tfrecords -weights runs/shapes
    python train.py -name coco -tfrecord_dir /data/coco_tfrecords -weights runs/coco \
        -batch_size 8 -init_weights resnet101_reducedfc.pth
    python train.py -name my_dataset -tfrecord_dir /data/mine ...   # custom: classes from
        # <tfrecord_dir>/label_map.json, written by data.coco_tfrecord_creator

Resumes from the latest checkpoint in -weights unless -noresume. Ctrl-C / SIGTERM
saves a checkpoint before exiting. TensorBoard logs: <weights>/logs.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("name", "shapes", "Config preset (coco, pascal, shapes, yolact_resnet50, ...) "
                    "or any other name for a custom dataset (classes from the label map).")
flags.DEFINE_string("tfrecord_dir", None, "Folder with train-*.tfrecord / val-*.tfrecord.")
flags.DEFINE_string("weights", "runs/yolact", "Folder for checkpoints, logs and config.json.")
flags.DEFINE_string("label_map", None, "Label map for a custom dataset "
                    "(default <tfrecord_dir>/label_map.json).")
flags.DEFINE_integer("batch_size", 8, "Global batch size (split across replicas).")
flags.DEFINE_float("lr", None, "Base learning rate (default: config LR x batch_size / 8).")
flags.DEFINE_float("momentum", None, "SGD momentum (default: config, 0.9).")
flags.DEFINE_float("weight_decay", None, "L2 weight decay (default: config, 5e-4).")
flags.DEFINE_integer("max_iter", None, "Iterations (default: config MAX_ITER x 8 / batch_size).")
flags.DEFINE_integer("warmup_iters", None, "Linear warmup iterations (default: config).")
flags.DEFINE_list("lr_steps", None, "Iterations where lr is multiplied by LR_GAMMA.")
flags.DEFINE_float("time_budget", None, "Train for this many minutes: the iteration count is "
                   "fitted to the measured step rate and the lr schedule stretched to it.")
flags.DEFINE_integer("print_interval", 10, "Log losses every N iterations.")
flags.DEFINE_integer("save_interval", 5000, "Checkpoint every N iterations.")
flags.DEFINE_integer("val_interval", 0, "Validate (COCO mAP) every N iterations; 0 = at the end.")
flags.DEFINE_integer("val_images", 0, "Validate on the first N val images (0 = all).")
flags.DEFINE_boolean("resume", True, "Resume from the latest checkpoint in -weights.")
flags.DEFINE_string("init_weights", None, "Initial weights (converted official .weights.h5, "
                    "backbone .pth/.h5); class-dependent layers are skipped on a class mismatch.")
flags.DEFINE_enum("strategy", "auto", ["auto", "mirrored", "multiworker", "default"],
                  "tf.distribute strategy. auto: MirroredStrategy over all local GPUs when "
                  "there are 2 or more, else the default strategy (faster on one device); "
                  "mirrored: MirroredStrategy even on one device; multiworker reads TF_CONFIG.")
flags.DEFINE_boolean("mixed_precision", False, "mixed_float16 compute with loss scaling.")
flags.DEFINE_boolean("validate", True, "Run COCO evaluation on the val split.")
flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE (repeatable).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("nan_patience", 100, "After this many consecutive non-finite (skipped) "
                     "steps, go back to the last checkpoint saved before them (at most 3 "
                     "times, then stop with an error); 0 = only skip them.")
flags.mark_flag_as_required("tfrecord_dir")


def main(argv):
    del argv
    from yolact.console import run_cli

    run_cli("yolact.training", "run_from_flags", FLAGS)


if __name__ == "__main__":
    app.run(main)
