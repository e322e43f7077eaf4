"""Predictor: images -> instances (boxes, classes, scores, masks at original size).

Stages (each callable on its own, which `evaluate.py --benchmark` times):
  preprocess   uint8 RGB [B, H0, W0, 3] -> float32 [B, H, W, 3] (IMG_SIZE; resized as
               RESIZE says, stretched or letterboxed, and normalized)
  network      model forward (inference mode)
  detect       FastNMS with fixed shapes (graph-compiled: XLA on the TF backend)
  postprocess  masks of the kept detections only, resized to each original size inside
               each mask's box (`paste_masks`, on the host); boxes and masks of a
               letterboxed input are mapped back from the part of the input the image
               covers (`content_fraction`)

On the TensorFlow backend the network runs as a plain graph (tf.function)
and detection as an XLA program (``jit_compile=True``): XLA makes FastNMS
about 6x faster but gives the convolutions nothing on CPU, and compiling the
whole network again for every new batch size costs 20-30 s
(benchmarks/RESULTS.md). On JAX both are jitted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from yolact.detection.detector import DetectionParams, detect
from yolact.detection.inputs import as_rgb_images
from yolact.detection.instances import Instances
from yolact.detection.postprocess import assemble_masks, paste_masks, pixel_boxes
from yolact.modeling import factory
from yolact.modeling.maskiou import class_maskiou
from yolact.ops.image import boxes_to_image, content_fraction, fit_image


def compile_fn(fn, jit_compile):
    """tf.function(jit_compile) on the TF backend, jax.jit on JAX, plain otherwise.

    jit_compile=None on TF: a plain graph without XLA.
    """
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit_compile, reduce_retracing=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


class Predictor:
    """Runs a YOLACT model end to end. Config is read here, once.

    `network`: an alternative to the Keras model's forward pass with the same
    inputs and outputs, e.g. OnnxNetwork (then `model` may be None).
    `max_pixels`: the most pixels (height x width) an image may have, by default the
    config's MAX_IMAGE_PIXELS; `predict` raises ImageTooLargeError (a ValueError and an
    IOError naming the image, its size and the limit) for a larger one, before any work.
    `maskiou_net`: YOLACT++'s mask re-scoring net (yolact.modeling.maskiou), by default
    the model's; a config with USE_MASKIOU needs one (an exported network file carries
    it beside, `yolact.weights.maskiou`). It runs compiled on the detections padded to
    max_num_detection masks, so its shape never changes.
    """

    def __init__(self, model, cfg, jit_compile: bool = True, network=None,
                 maskiou_net=None, max_pixels: int | None = None, **detection_overrides):
        self.model = model
        self.cfg = cfg
        # images of more pixels are refused (`yolact.utils.media.check_pixels`): their
        # full-size masks alone take 1 byte a pixel per detection
        self.max_pixels = cfg.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
        self.img_size, self.mean, self.std = cfg.IMG_HW, tuple(cfg.MEAN), tuple(cfg.STD)
        self.resize = cfg.RESIZE
        self.class_names = tuple(cfg.CLASS_NAMES)
        self.priors = factory.build_priors(cfg)
        self.params = dataclasses.replace(DetectionParams.from_config(cfg), **detection_overrides)
        if network is None and model is None:
            raise ValueError("Predictor needs a model or a network")
        self.maskiou_net = maskiou_net or getattr(model, "maskiou_net", None)
        if cfg.USE_MASKIOU and self.maskiou_net is None:
            raise ValueError(f"config {cfg.NAME!r} is YOLACT++ (USE_MASKIOU) but the Predictor "
                             f"got no mask-IoU net (maskiou_net=)")
        self._network = network or compile_fn(lambda x: self.model(x, training=False), None)
        self._detect = compile_fn(lambda outputs: detect(outputs, self.priors, self.params),
                                jit_compile)
        if self.maskiou_net is not None:
            self._maskiou = compile_fn(
                lambda masks, classes: class_maskiou(self.maskiou_net, masks, classes),
                jit_compile)

    # ---- stages -----------------------------------------------------------
    def preprocess(self, images):
        """uint8 [B, H0, W0, 3] RGB (all the same size) -> float32 [B, H, W, 3]."""
        return fit_image(images, self.img_size, self.mean, self.std, self.resize)

    def fraction(self, height: int, width: int) -> tuple:
        """(fy, fx): the part of the network input an image of height x width covers."""
        return content_fraction(height, width, self.img_size, self.resize)

    def network_and_detect(self, inputs) -> dict:
        """float32 [B, S, S, 3] -> numpy detections (see yolact.detection.detect) + proto."""
        from keras import ops

        outputs = self._network(inputs)
        det = dict(self._detect({k: outputs[k] for k in ("loc", "conf", "coef")}))
        det["proto"] = outputs["proto"]
        return {k: ops.convert_to_numpy(v) for k, v in det.items()}

    def postprocess_one(self, det: dict, index: int, height: int, width: int) -> Instances:
        """Masks and pixel boxes of image `index` of a batch at its original size (and,
        for YOLACT++, the mask scores re-scored by the mask-IoU net)."""
        n = int(det["num_detections"][index])
        if n == 0:
            return Instances(np.zeros((0, 4), np.int32), np.zeros((0,), np.int32),
                             np.zeros((0,), np.float32), np.zeros((0, height, width), np.uint8))
        from keras import ops

        lowres = assemble_masks(det["proto"][index:index + 1], det["coef"][index:index + 1, :n],
                                det["boxes"][index:index + 1, :n])
        fraction = self.fraction(height, width)
        boxes = pixel_boxes(boxes_to_image(det["boxes"][index, :n], fraction), height, width)
        classes = np.asarray(det["classes"][index, :n], np.int32)
        scores = np.asarray(det["scores"][index, :n], np.float32)
        lowres = ops.convert_to_numpy(lowres)[0]
        mask_scores = None
        if self.maskiou_net is not None and self.cfg.RESCORE_MASK:
            pad = max(self.params.max_num_detection, n) - n
            maskiou = ops.convert_to_numpy(self._maskiou(
                np.pad(lowres, ((0, pad), (0, 0), (0, 0))), np.pad(classes, (0, pad))))
            mask_scores = scores * maskiou[:n].astype(np.float32)
            if self.cfg.RESCORE_BBOX:  # official: both scores re-scored
                scores = mask_scores
        return Instances(
            boxes=ops.convert_to_numpy(boxes), classes=classes, scores=scores,
            masks=paste_masks(lowres, height, width, fraction), mask_scores=mask_scores,
        )

    # ---- end to end ---------------------------------------------------------
    def predict_normalized(self, inputs, sizes) -> list:
        """Already preprocessed batch + [(height, width)] -> list of Instances."""
        det = self.network_and_detect(inputs)
        return [self.postprocess_one(det, i, int(h), int(w)) for i, (h, w) in enumerate(sizes)]

    def predict(self, images) -> list:
        """List of uint8 RGB images [H, W, 3] (any sizes) -> list of Instances, one per image.

        Also accepted (`yolact.detection.inputs`): one image on its own (-> a list of one,
        as Ultralytics does), a uint8 [B, H, W, 3] batch, gray [H, W] and RGBA images
        (made RGB), and paths (str / pathlib.Path: read with OpenCV, EXIF orientation
        applied). Float and other non-uint8 arrays, other shapes and empty images raise
        one ValueError saying what was received. An empty list gives [].
        """
        images = as_rgb_images(images)
        if not images:
            return []
        from yolact.utils.media import check_pixels

        for index, image in enumerate(images):
            check_pixels(*image.shape[:2], self.max_pixels,
                         f"Predictor.predict: image {index}")
        if len({im.shape for im in images}) > 1:  # mixed sizes: each on its own
            inputs = np.concatenate([np.asarray(self.preprocess(im[None])) for im in images])
        else:
            inputs = self.preprocess(np.stack(images))
        return self.predict_normalized(inputs, [im.shape[:2] for im in images])
