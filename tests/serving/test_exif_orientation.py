"""A phone photo (EXIF orientation 6: stored landscape, shown portrait) annotated in the
displayed coordinates, as every annotation tool shows it, goes the same way through the
TFRecord creator, the tf.data decoder and train parser, inference.py (OpenCV) and every
SavedModel signature: the same 160 x 96 (height x width) image, the mask over the object,
detection boxes and masks in displayed coordinates. The detections come from a
content-following stand-in network (tests/serving/stub.py): its mask is where the image
is bright, so a path that saw the stored pixels would put it elsewhere."""

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.data_utils import read_split, rect_poly, write_json

DISPLAY_HW = (160, 96)
OBJECT = (20, 10, 80, 60)  # x1, y1, x2, y2 of the white rectangle, displayed pixels


def displayed_photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(50, 8, (*DISPLAY_HW, 3)), 0, 255).astype(np.uint8)
    x1, y1, x2, y2 = OBJECT
    image[y1:y2, x1:x2] = 255
    return image


def object_mask() -> np.ndarray:
    mask = np.zeros(DISPLAY_HW, bool)
    x1, y1, x2, y2 = OBJECT
    mask[y1:y2, x1:x2] = True
    return mask


def phone_jpeg(image: np.ndarray) -> bytes:
    """JPEG of the stored pixels (the displayed ones turned 90 degrees counter-clockwise)
    with EXIF orientation 6 (rotate 90 degrees clockwise to display)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.rot90(image, 1))).save(
        out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def iou(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    work = tmp_path_factory.mktemp("exif")
    data = phone_jpeg(displayed_photo())
    assert Image.open(io.BytesIO(data)).size == (160, 96)  # stored landscape (w, h)
    for name in ("with_size.jpg", "without_size.jpg"):
        (work / name).write_bytes(data)
    return work, data


def test_creator_stores_the_displayed_photo_and_the_parser_masks_the_object(photo):
    import tensorflow as tf

    from config import get_config
    from data.creator import create_tfrecords
    from data.parser import Parser

    work, _ = photo
    height, width = DISPLAY_HW
    images = [{"id": 1, "file_name": "with_size.jpg", "width": width, "height": height},
              {"id": 2, "file_name": "without_size.jpg"}]
    x1, y1, x2, y2 = OBJECT
    anns = [{"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "area": 3000.0,
             "segmentation": rect_poly(x1, y1, x2, y2), "bbox": [x1, y1, x2 - x1, y2 - y1]}
            for i in (1, 2)]
    path = write_json(work / "ann.json", {"images": images, "annotations": anns,
                                          "categories": [{"id": 1, "name": "thing"}]})
    summary = create_tfrecords(str(work / "records"), str(work), train_annotations_file=path,
                               show_progress=False)["train"]
    assert summary["images_written"] == 2, summary["skipped"]
    assert summary["images_normalized"] == {"exif_orientation_6": 2}
    records = read_split(work / "records", "train")
    cfg = get_config("tiny")
    parser = Parser.from_config(cfg, augment=False)
    for record in records:
        assert record["image"].shape == (*DISPLAY_HW, 3)
        assert (record["height"], record["width"]) == DISPLAY_HW
        bright = record["image"].mean(-1) > 200
        assert iou(bright, object_mask()) > 0.95
        assert iou(record["gt_masks"][0], bright) > 0.95  # the mask over the object
        parsed = parser.parse_train({k: tf.constant(v) for k, v in record.items()})
        image = parsed["image"].numpy().mean(-1)  # normalized: the object is > 1.5
        small = cv2.resize((image > 1.0).astype(np.uint8), cfg.PROTO_HW[::-1],
                           interpolation=cv2.INTER_AREA)
        assert iou(parsed["gt_masks"][0].numpy(), small) > 0.8


def test_creator_names_exif_when_the_annotation_has_the_stored_size(photo, tmp_path):
    from data.convert import convert_record

    work, _ = photo
    record = {"image_path": str(work / "with_size.jpg"), "filename": "with_size.jpg",
              "source_id": "1", "height": 96, "width": 160, "objects": []}
    result = convert_record(record, {1: (1, "thing")})
    assert result["reason"] == "size_mismatch"
    assert "EXIF orientation 6" in result["detail"] and "displayed" in result["detail"]


def test_inference_and_every_signature_agree_on_the_displayed_photo(photo, tmp_path):
    import tensorflow as tf

    from config import get_config
    from data.tf_example import make_example
    from tests.serving.stub import stub_model
    from yolact.detection.postprocess import masks_from_compact
    from yolact.detection.predictor import Predictor
    from yolact.detection.runner import OutputOptions, run_inference
    from yolact.serving.saved_model import build_archive
    from yolact.utils.media import read_image

    work, data = photo
    cfg = get_config("tiny")
    model = stub_model(cfg)
    predictor = Predictor(model, cfg, jit_compile=False)
    image = read_image(str(work / "with_size.jpg"))  # what inference.py reads
    assert image.shape == (*DISPLAY_HW, 3)
    reference = predictor.predict([image])[0]
    assert reference.masks.shape[1:] == DISPLAY_HW
    assert iou(reference.masks[0], object_mask()) > 0.9
    assert (reference.boxes[0, 2] <= 96) and (reference.boxes[0, 3] <= 160)

    summary = run_inference(predictor, str(work / "with_size.jpg"), str(tmp_path / "out"),
                            OutputOptions(save_json=True), progress=False)
    results = json.loads(open(summary["results_json"]).read())
    assert (results["images"][0]["height"], results["images"][0]["width"]) == DISPLAY_HW
    assert results["annotations"][0]["bbox"][:2] == reference.boxes[0, :2].tolist()

    build_archive(model, cfg).write_out(str(tmp_path / "saved"), verbose=False)
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    signatures = loaded.signatures
    example = make_example({
        "encoded": data, "height": 96, "width": 160, "format": "jpeg",
        "filename": "with_size.jpg", "source_id": "1", "boxes": [], "labels": [],
        "texts": [], "is_crowd": [], "areas": [], "masks": []}).SerializeToString()
    outputs = {
        "serving_default": signatures["serving_default"](images=tf.constant([data])),
        "serving_tf_example": signatures["serving_tf_example"](
            serialized=tf.constant([example])),
        "serving_compact": signatures["serving_compact"](images=tf.constant([data])),
        "serving_preprocessed": signatures["serving_preprocessed"](
            images=tf.constant(np.asarray(predictor.preprocess(image[None]))),
            image_sizes=tf.constant([DISPLAY_HW], tf.int32)),
    }
    for name, out in outputs.items():
        out = {k: v.numpy() for k, v in out.items()}
        np.testing.assert_array_equal(out["image_sizes"][0], DISPLAY_HW, name)
        n = int(out["num_detections"][0])
        assert n == len(reference), name
        np.testing.assert_array_equal(out["boxes"][0, :n], reference.boxes, name)
        if "masks" in out:
            assert out["masks"].shape == (1, n, *DISPLAY_HW), name
            mask = out["masks"][0, 0]
        else:
            mask = masks_from_compact(out["masks_lowres"][0, :n], *DISPLAY_HW)[0]
        assert iou(mask, reference.masks[0]) > 0.98, name
        assert iou(mask, object_mask()) > 0.9, name
