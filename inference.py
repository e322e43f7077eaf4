"""Instance segmentation of an image, a folder of images, a video file or a webcam.

    python inference.py -weights yolact_base -input photo.jpg -output_dir out
        # COCO weights by name: fetched once into $YOLACT_CACHE, preset and classes with it
    python inference.py -name coco -weights yolact_base.weights.h5 -input photo.jpg \
        -output_dir out
    python inference.py -name shapes -weights runs/shapes -input images/ -output_dir out \
        -save_json -save_masks -batch_size 8
    python inference.py -name coco -weights yolact_base_54_800000.pth -input clip.mp4 \
        -output_dir out -score_threshold 0.15 -top_k 100
    python inference.py -onnx export/1/model.onnx -input images/ -output_dir out

Writes drawn images (or <stem>.mp4), and with -save_masks / -save_json the
per-instance PNG masks and a COCO-style results.json (RLE masks); see
yolact/detection/runner.py. A folder run skips unreadable files and reports them.
"""

from yolact.cli.inference import main

if __name__ == "__main__":
    main()
