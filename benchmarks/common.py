"""Shared helpers of the benchmark scripts: timing, peak memory, machine description.

Timings are wall-clock (`time.perf_counter`), reported as the median of
`repeats` calls after `warmup` untimed calls. Peak memory is the process's
resident-set high-water mark (VmHWM of /proc/self/status, which
`reset_peak_rss` rewinds on Linux; `resource.getrusage` elsewhere). TensorFlow
allocates in C++, so `tracemalloc` (Python objects only) is reported apart and
is no substitute for the RSS figure.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import resource
import statistics
import time
import tracemalloc


@dataclasses.dataclass
class Timing:
    """Wall and process-CPU seconds of the timed calls (warm-up excluded), and the
    wall seconds of the first call (tracing / compilation included).

    CPU seconds (all threads of this process) are less sensitive to other
    processes on a shared machine than wall seconds: on an idle machine with T
    threads, wall >= cpu / T.
    """

    times: list = dataclasses.field(default_factory=list)
    cpu_times: list = dataclasses.field(default_factory=list)
    first: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu_times)

    @property
    def spread(self) -> float:
        """(max - min) / median: above ~0.2 the figure is noisy (shared machine)."""
        return (max(self.times) - min(self.times)) / self.median if self.median else 0.0


def _timed_call(fn, sync):
    wall, cpu = time.perf_counter(), time.process_time()
    sync(fn())
    return time.perf_counter() - wall, time.process_time() - cpu


def _identity(result):
    return result


def time_fn(fn, repeats: int = 5, warmup: int = 1, sync=None) -> Timing:
    """Call `fn()` warmup + repeats times; `sync(result)` forces completion (e.g. to numpy).

    At least one warm-up call is made; the first call is timed on its own.
    """
    return time_interleaved({"fn": fn}, repeats, warmup, sync)["fn"]


def time_interleaved(fns: dict, repeats: int = 5, warmup: int = 1, sync=None) -> dict:
    """{name: Timing}, calling the functions in turn (a, b, c, a, b, c, ...).

    Interleaving spreads slow phases of a shared machine over every variant, so
    ratios between them are fairer than with one block of calls per variant.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    sync = sync or _identity
    out = {name: Timing() for name in fns}
    for name, fn in fns.items():  # first calls (tracing, compilation), then warm-up
        out[name].first = _timed_call(fn, sync)[0]
    for i in range(max(warmup, 1) - 1 + repeats):
        for name, fn in fns.items():
            wall, cpu = _timed_call(fn, sync)
            if i >= max(warmup, 1) - 1:
                out[name].times.append(wall)
                out[name].cpu_times.append(cpu)
    return out


def set_threads(threads: int) -> None:
    """TF intra- and inter-op pools of `threads` threads (before TF runs any op)."""
    import tensorflow as tf

    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float:
    """Current resident set size in MiB (0 where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


def peak_rss_mb() -> float:
    """Resident-set high-water mark in MiB since start or the last `reset_peak_rss`."""
    kb = _status_kb("VmHWM")
    if kb is None:  # ru_maxrss: KiB on Linux, bytes on macOS; never reset
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if platform.system() == "Darwin":
            kb //= 1024
    return kb / 1024


def reset_peak_rss() -> bool:
    """Rewind the high-water mark to the current RSS (Linux /proc/self/clear_refs "5")."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryPhase:
    """Context manager: peak RSS (MiB), RSS at entry and Python-heap peak of a phase.

    with MemoryPhase() as mem: ...;  mem.peak_mb, mem.start_mb, mem.python_peak_mb
    `peak_mb` is process-wide: memory kept from earlier phases counts too
    (`peak_mb - start_mb` is what the phase added at most).
    """

    def __enter__(self):
        self.resettable = reset_peak_rss()
        self.start_mb = rss_mb()
        self._traced = not tracemalloc.is_tracing()
        if self._traced:
            tracemalloc.start()
        tracemalloc.reset_peak()
        return self

    def __exit__(self, *exc):
        self.peak_mb = peak_rss_mb()
        self.python_peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
        if self._traced:
            tracemalloc.stop()
        return False


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    """The SIMD flags of this CPU that change TensorFlow's numerics and speed (oneDNN is on by
    default only with AVX-512), e.g. "avx2 avx512f avx512_vnni avx512_bf16"; "?" without
    /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return "?"
    return " ".join(w for w in ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16",
                                "amx_bf16", "amx_int8") if w in words)


def cpu_description() -> str:
    """The CPU model and its flags, e.g. "AMD EPYC (avx2 avx512f avx512_vnni avx512_bf16)"."""
    return f"{_cpu_model()} ({cpu_flags() or 'flags unknown'})"


def machine_info(threads: int) -> dict:
    """Date, CPU, core count, thread setting, load average, library versions."""
    import keras
    import tensorflow as tf

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "load_avg": tuple(round(x, 2) for x in load),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "python": platform.python_version(),
    }


def print_machine(info: dict) -> None:
    print(f"# {info['date']}  {info['cpu']}  cores={info['cores']}  threads={info['threads']}  "
          f"load avg (1/5/15 min)={info['load_avg']}")
    print(f"# TF {info['tensorflow']}  Keras {info['keras']} ({info['keras_backend']})  "
          f"Python {info['python']}")


def load_warning(info: dict) -> str:
    """A warning line when the 1-minute load exceeds the core count (noisy timings)."""
    if info["load_avg"][0] > (info["cores"] or 1):
        return (f"# WARNING: load average {info['load_avg'][0]} > {info['cores']} cores: "
                f"other processes share the CPU, timings are inflated; re-run on an idle machine")
    return ""


def print_table(header: list, rows: list) -> None:
    """Left-aligned first column, right-aligned others; floats with 3 significant digits."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in [header] + rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(row, widths))))


def write_json(path: str, data) -> None:
    """Atomic JSON write (temp file + os.replace); non-JSON values become strings."""
    import json

    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


_START = time.perf_counter()


def log(message: str) -> None:
    """Progress line on stderr: seconds since the module was first used, and the message."""
    import sys

    print(f"[{time.perf_counter() - _START:7.1f} s] {message}", file=sys.stderr, flush=True)


def write_shapes_records(tmp: str, num_images: int, seed: int = 0) -> str:
    """Shapes images (640x480) -> TFRecords in `tmp`; returns the train shard glob."""
    from data import shapes
    from data.coco_tfrecord_creator import create_tfrecords

    data_dir = os.path.join(tmp, "shapes")
    shapes.generate(data_dir, num_images, 0, seed, fixed_size=(480, 640), show_progress=False)
    out = os.path.join(tmp, "records")
    create_tfrecords(out, train_image_dir=os.path.join(data_dir, "images", "train"),
                     train_annotations_file=os.path.join(data_dir, "annotations", "train.json"),
                     dataset="coco", num_shards=2, num_workers=1, keep_empty_train=True,
                     show_progress=False)
    return os.path.join(out, "train-*.tfrecord")
