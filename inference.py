"""Instance segmentation of an image, a folder of images, a video file or a webcam.

    python inference.py -name coco -weights yolact_base.weights.h5 -input photo.jpg \
        -output_dir out
    python inference.py -name shapes -weights runs/shapes -input images/ -output_dir out \
        -save_json -save_masks -batch_size 8
    python inference.py -name coco -weights yolact_base_54_800000.pth -input clip.mp4 \
        -output_dir out -score_threshold 0.15 -top_k 100
    python inference.py -onnx export/1/model.onnx -input images/ -output_dir out

Writes drawn images (or <stem>.mp4), and with -save_masks / -save_json the
per-instance PNG masks and a COCO-style results.json (RLE masks); see
yolact/inference_io.py. A folder run skips unreadable files and reports them.
"""

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("name", "coco", "Config preset or custom dataset name.")
flags.DEFINE_string("weights", None, "Checkpoint folder/prefix, .weights.h5 or official .pth.")
flags.DEFINE_boolean("best", True, "With a training folder, use its best/ weights if present.")
flags.DEFINE_string("label_map", None, "Label map of a custom dataset (class names).")
flags.DEFINE_string("input", None, "Image file, folder of images, video file or webcam index.")
flags.DEFINE_string("output_dir", None, "Folder for the drawn outputs, masks and results.json.")
flags.DEFINE_float("score_threshold", 0.3, "Show and save detections with score > this.")
flags.DEFINE_integer("top_k", 15, "At most this many detections per image (0 = no limit).")
flags.DEFINE_boolean("show_boxes", True, "Draw boxes.")
flags.DEFINE_boolean("show_masks", True, "Draw masks.")
flags.DEFINE_boolean("show_labels", True, "Draw class names and scores.")
flags.DEFINE_boolean("save_masks", False, "Write one PNG mask per instance.")
flags.DEFINE_boolean("save_json", False, "Write results.json (COCO style, RLE masks).")
flags.DEFINE_integer("batch_size", 4, "Images (or video frames) per forward pass.")
flags.DEFINE_boolean("jit_compile", True, "XLA-compile network + detection (TF backend).")
flags.DEFINE_multi_string("override", [], "Config override KEY=VALUE (repeatable).")
flags.DEFINE_string("onnx", None, "Run the network with onnxruntime from this model.onnx "
                    "(export_savedmodel.py -onnx; its config.json is read from beside it "
                    "unless -weights is given). Detection and masks stay the same.")
flags.DEFINE_integer("onnx_threads", 0, "onnxruntime intra-op threads (0: all cores).")
flags.mark_flags_as_required(["input", "output_dir"])


def main(argv):
    del argv
    from yolact.console import run_cli

    run_cli("yolact.cli", "inference_from_flags", FLAGS)


if __name__ == "__main__":
    app.run(main)
