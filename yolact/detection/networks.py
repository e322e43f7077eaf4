"""Networks from other engines, callable like the Keras model in inference mode.

float32 [B, H, W, 3] normalized -> {'loc', 'conf', 'coef', 'proto'} numpy arrays; a
`Predictor(None, cfg, network=...)` runs detection and masks on their outputs. H x W is
the IMG_HW the file was exported at (`input_shape`; a file takes no other size:
`check_input_size`); the config.json beside it says how images were fitted to it
(RESIZE), which the Predictor repeats.
"""

from __future__ import annotations

import numpy as np

# The outputs of every exported network file, as the Keras model in inference mode has them.
NETWORK_OUTPUTS = ("loc", "conf", "coef", "proto")


def check_output_names(names, where: str) -> None:
    """ValueError unless a network file has exactly the outputs of an exported YOLACT."""
    if sorted(names) != sorted(NETWORK_OUTPUTS):
        raise ValueError(f"{where}: expected the outputs {NETWORK_OUTPUTS} of an exported "
                         f"YOLACT network, got {list(names)}")


def check_input_size(network, img_size, where: str) -> None:
    """ValueError unless the network file takes images of the config's IMG_SIZE (an int
    side or (height, width); a file exported at another size would otherwise fail deep
    inside its engine, or not at all). The message names the file, its input shape and
    IMG_SIZE: "model.onnx: the network takes 96x160 images (input shape (None, 96, 160,
    3)) but the config says IMG_SIZE=128; use the config.json exported with it (or
    -override IMG_SIZE=[96,160])". Dynamic input dims are not checked."""
    shape = getattr(network, "input_shape", None)
    if not shape or len(shape) != 4:
        return
    size = tuple(shape[1:3])
    hw = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)
    if all(isinstance(d, int) and d > 0 for d in size) and size != tuple(hw):
        square = size[0] == size[1]
        override = str(size[0]) if square else f"[{size[0]},{size[1]}]"
        asked = img_size if isinstance(img_size, int) else list(hw)
        raise ValueError(f"{where}: the network takes {size[0]}x{size[1]} images (input "
                         f"shape {tuple(shape)}) but the config says IMG_SIZE={asked}; use "
                         f"the config.json exported with it (or -override "
                         f"IMG_SIZE={override})")


def check_output_widths(network, expected: dict, where: str) -> None:
    """ValueError unless a network file's outputs are as wide as the config it runs under
    says: `expected` {output name: (priors, width)} (priors: the config's prior count for
    loc / conf / coef, None for proto, whose width is its channel count). A model.onnx of
    5 classes beside a 3-class config.json would otherwise fail inside detection. Dynamic
    dims and networks without `output_shapes` are not checked."""
    shapes = getattr(network, "output_shapes", None) or {}
    wrong = []
    for name, (priors, width) in expected.items():
        shape = shapes.get(name)
        if not shape:
            continue
        if shape[-1] is not None and shape[-1] != width:
            wrong.append(f"{name} has {shape[-1]} channels, the config needs {width}")
        if priors is not None and len(shape) == 3 and shape[1] not in (None, priors):
            wrong.append(f"{name} has {shape[1]} priors, the config needs {priors}")
    if wrong:
        raise ValueError(f"{where}: the network does not fit the config it runs under "
                         f"({'; '.join(wrong)}; conf = NUM_CLASSES + 1 with the background, "
                         f"coef and proto = NUM_MASK): the file and the config come from "
                         f"different exports; export again, or use its own config.json")


def _dims(shape) -> tuple:
    """Static dims as ints, dynamic ones as None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


class OnnxNetwork:
    """The network exported by `export_savedmodel.py -onnx`, run by onnxruntime on the CPU.

    Callable like the Keras model in inference mode: float32 [B, H, W, 3] normalized
    -> {'loc', 'conf', 'coef', 'proto'} numpy arrays. On 2 CPU threads it ran the
    R50-550 network in 0.88x the time of TF's fastest graph (benchmarks/RESULTS.md).
    """

    OUTPUTS = NETWORK_OUTPUTS

    def __init__(self, path: str, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError("running an ONNX network needs onnxruntime "
                              "(pip install onnxruntime)") from err

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (all cores)
        try:
            self.session = ort.InferenceSession(path, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime's own classes: InvalidProtobuf, Fail, ...
            if not type(err).__module__.startswith("onnxruntime"):
                raise
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"{path}: onnxruntime cannot load it, not an ONNX network "
                             f"({type(err).__name__}: {first})") from None
        names = [o.name for o in self.session.get_outputs()]
        check_output_names(names, path)
        self.names = names
        self.output_shapes = {o.name: _dims(o.shape) for o in self.session.get_outputs()}
        self.input_name = self.session.get_inputs()[0].name
        self.input_shape = _dims(self.session.get_inputs()[0].shape)

    def __call__(self, images) -> dict:
        feed = {self.input_name: np.asarray(images, np.float32)}
        return dict(zip(self.names, self.session.run(None, feed)))


class LiteRTNetwork:
    """A .tflite network run by the LiteRT interpreter (XNNPACK on the CPU).

    Callable like the Keras model in inference mode: float32 [B, H, W, 3] normalized ->
    {'loc', 'conf', 'coef', 'proto'} numpy arrays (a batch runs image by image).
    """

    OUTPUTS = NETWORK_OUTPUTS

    def __init__(self, path: str | None = None, threads: int = 0, content: bytes | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as err:
            raise ImportError("running a .tflite network needs the LiteRT runtime "
                              "(pip install ai-edge-litert)") from err

        where = path or "the LiteRT model"
        try:
            self.interpreter = Interpreter(model_path=path, model_content=content,
                                           num_threads=threads or None)
        except ValueError as err:
            raise ValueError(f"{where}: not a LiteRT (.tflite) model ({err})") from None
        if not self.interpreter.get_signature_list():
            raise ValueError(f"{where}: a .tflite file without a signature, not a network "
                             f"written by export_savedmodel.py -formats litert")
        self.runner = self.interpreter.get_signature_runner()
        check_output_names(sorted(self.runner.get_output_details()), where)
        self.output_shapes = {name: _dims([int(d) for d in detail["shape"]])
                              for name, detail in self.runner.get_output_details().items()}
        (self.input_name, detail), = self.runner.get_input_details().items()
        self.input_shape = tuple(int(d) for d in detail["shape"])

    def __call__(self, images) -> dict:
        images = np.asarray(images, np.float32)
        if images.shape[1:] != self.input_shape[1:]:
            raise ValueError(f"the LiteRT network takes images {self.input_shape[1:]}, got "
                             f"{images.shape[1:]}")
        runs = [self.runner(**{self.input_name: image[None]}) for image in images]
        return {k: np.concatenate([r[k] for r in runs]) for k in self.OUTPUTS}


class OpenVINONetwork:
    """An OpenVINO IR network (model.xml + model.bin) run by OpenVINO's CPU plugin.

    Callable like the Keras model in inference mode: float32 [B, H, W, 3] normalized ->
    {'loc', 'conf', 'coef', 'proto'} numpy arrays. `precision`: "fp32"; "bf16" (CPUs with
    AVX512_BF16 or AMX); "auto", the plugin's choice (bf16 where the CPU has it).
    """

    OUTPUTS = NETWORK_OUTPUTS
    PRECISIONS = {"fp32": "f32", "bf16": "bf16", "auto": None}

    def __init__(self, path: str, threads: int = 0, precision: str = "auto"):
        try:
            import openvino as ov
        except ImportError as err:
            raise ImportError("running an OpenVINO network needs openvino "
                              "(pip install openvino)") from err
        if precision not in self.PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {tuple(self.PRECISIONS)}, "
                             f"got {precision!r}")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        if self.PRECISIONS[precision]:
            config["INFERENCE_PRECISION_HINT"] = self.PRECISIONS[precision]
        core = ov.Core()
        try:
            network = core.read_model(path)
        except RuntimeError as err:
            raise ValueError(f"{path}: not an OpenVINO IR model ({str(err).splitlines()[0]})"
                             ) from None
        check_output_names([o.get_any_name() for o in network.outputs], path)
        self.output_shapes = {o.get_any_name(): tuple(d.get_length() if d.is_static else None
                                                      for d in o.get_partial_shape())
                              for o in network.outputs}
        self.input_shape = _dims([d.get_length() if d.is_static else None
                                  for d in network.inputs[0].get_partial_shape()])
        self.compiled = core.compile_model(network, "CPU", config)
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what it runs in
        name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.precision = {"f32": "fp32", "f16": "fp16"}.get(name, name)
        self.request = self.compiled.create_infer_request()

    def __call__(self, images) -> dict:
        results = self.request.infer([np.asarray(images, np.float32)])
        return {o.get_any_name(): np.array(v) for o, v in results.items()}


# onnxruntime's and OpenVINO's uint8 x int8 kernels on x86 CPUs without VNNI (AVX-512 VNNI or
# AVX-VNNI) multiply with `vpmaddubsw`, which adds two uint8 x int8 products into an int16:
# weights up to 64 in magnitude (7 bits, what our exporter writes) cannot saturate it
# (255 * (64 + 64) <= 32767), full-range int8 weights can.
SAFE_INT8_WEIGHT = 64


def cpu_has_vnni(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether this CPU has VNNI (avx512_vnni or avx_vnni in `cpuinfo`); None if unknown."""
    try:
        with open(cpuinfo) as f:
            words = set(f.read().split())
    except OSError:
        return None
    return bool(words & {"avx512_vnni", "avx_vnni"})


def int8_weights(path: str) -> list:
    """The int8 weight arrays of an ONNX file (its INT8 initializers) or an OpenVINO IR (its
    i8 constants); [] for a float file or a file of another kind."""
    if path.endswith(".onnx"):
        import onnx
        from onnx import numpy_helper

        return [numpy_helper.to_array(init) for init in onnx.load(path).graph.initializer
                if init.data_type == onnx.TensorProto.INT8]
    if path.endswith(".xml"):
        import openvino as ov

        model = ov.Core().read_model(path)
        return [op.get_data() for op in model.get_ops()
                if op.get_type_name() == "Constant" and op.get_element_type() == ov.Type.i8]
    return []


def largest_int8_weight(path: str) -> int | None:
    """The largest |int8 weight| of an ONNX or OpenVINO IR file (`int8_weights`); None for a
    file without int8 weights (a float file) or of another kind."""
    return max((int(np.abs(a.astype(np.int32)).max()) for a in int8_weights(path) if a.size),
               default=None)


def int8_saturation_warning(path: str, has_vnni: bool | None = None) -> str | None:
    """A one-line warning for an int8 file whose 8-bit weights saturate on this CPU (x86
    without VNNI; `has_vnni` default: `cpu_has_vnni()`), None otherwise. Files exported by
    this project since the int8 portability fix have 7-bit weights and never warn."""
    has_vnni = cpu_has_vnni() if has_vnni is None else has_vnni
    if has_vnni is not False:
        return None
    largest = largest_int8_weight(path)
    if largest is None or largest <= SAFE_INT8_WEIGHT:
        return None
    return (f"{path}: int8 weights up to {largest} saturate the int8 kernels of CPUs "
            f"without VNNI such as this one (outputs off by 0.3-0.5 x std on the shapes "
            f"network); export it again with export_savedmodel.py, which writes 7-bit weights "
            f"that are exact on every x86 CPU")


ENGINES = {".onnx": ("onnxruntime", OnnxNetwork), ".tflite": ("LiteRT", LiteRTNetwork),
           ".xml": ("OpenVINO", OpenVINONetwork)}


def open_network(path: str, threads: int = 0, precision: str = "auto"):
    """The exported network file at `path`, with the engine its extension names
    (.onnx: onnxruntime, .tflite: LiteRT, .xml: OpenVINO); returns (network, engine name)."""
    import os

    ext = os.path.splitext(path)[1].lower()
    if ext not in ENGINES:
        raise ValueError(f"-model {path!r}: unknown network file type {ext or '(none)'!r}; "
                         f"expected one of {', '.join(ENGINES)} or a SavedModel version "
                         f"folder (export_savedmodel.py -formats writes them)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"-model: no such file {path!r}")
    engine, cls = ENGINES[ext]
    if cls is OpenVINONetwork:
        network = cls(path, threads=threads, precision=precision)
        return network, f"{engine} ({network.precision})"
    return cls(path, threads=threads), engine
