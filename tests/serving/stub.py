"""A weightless stand-in for the YOLACT network whose one detection follows the image's
content: the largest prior (about the whole input) is class 0 with a score of ~1, and its
mask is where the image is bright (prototype 0 = 4 x the normalized brightness, every
coefficient 0 but the first). Whatever path decodes and orients the image, the mask
returned shows where the bright object is in the coordinates of the image it saw."""

import keras
import numpy as np
from keras import ops


class BrightObjectNet(keras.Model):
    """images float32 [B, H, W, 3] normalized -> {loc, conf, coef, proto} of a config."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)
        from yolact.modeling import factory

        priors = np.asarray(factory.build_priors(cfg))
        best = int(np.argmax(priors[:, 2] * priors[:, 3]))
        conf = np.zeros((1, cfg.NUM_PRIORS, cfg.NUM_CLASSES_WITH_BG), np.float32)
        conf[0, :, 0] = 10.0
        conf[0, best] = 0.0
        conf[0, best, 1] = 10.0
        coef = np.zeros((1, cfg.NUM_PRIORS, cfg.NUM_MASK), np.float32)
        coef[0, :, 0] = 1.0
        self.conf, self.coef = conf, coef
        self.num_priors, self.num_mask, self.proto_hw = cfg.NUM_PRIORS, cfg.NUM_MASK, cfg.PROTO_HW

    def call(self, images, training=False):
        zero = ops.reshape(ops.zeros_like(images[:, 0, 0, 0]), (-1, 1, 1))
        bright = ops.mean(ops.image.resize(images, self.proto_hw), axis=-1, keepdims=True)
        proto = ops.concatenate([4.0 * bright] + [ops.zeros_like(bright)] * (self.num_mask - 1),
                                axis=-1)
        return {"loc": zero + ops.zeros((1, self.num_priors, 4)),
                "conf": zero + ops.convert_to_tensor(self.conf),
                "coef": zero + ops.convert_to_tensor(self.coef), "proto": proto}


def stub_model(cfg):
    model = BrightObjectNet(cfg)
    model(np.zeros((1, *cfg.IMG_HW, 3), np.float32))
    return model
