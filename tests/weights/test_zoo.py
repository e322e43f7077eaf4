"""Pretrained weights by name (yolact/weights/zoo.py, hub.py, yolact/configs/pretrained.py).

A real HTTP server on 127.0.0.1 serves tests/fixtures/weights.pth (the official `tiny`
network, tests/fixtures/README.md) in the hub's URL layout
(`/{repo_id}/resolve/{revision}/{filename}`, HEAD and GET with the headers huggingface_hub
reads: X-Repo-Commit, ETag / X-Linked-Etag = SHA-256, X-Linked-Size, Content-Length, Range);
HF_ENDPOINT points the library at it and a test-only zoo entry names it. Bytes travel over a
socket; nothing of the library is mocked. No test needs the internet.
"""

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import typing

import numpy as np
import pytest

from config import get_config
from tests import REPO, subprocess_env
from yolact.configs.pretrained import from_pretrained, local_weights, pretrained_weights
from yolact.modeling.factory import build_model
from yolact.weights import hub, zoo
from yolact.weights.checkpoints import UnknownWeightsError, load_weights_report
from yolact.weights.verify import detection_check, raw_output_check, run_reference_input

FIXTURE = REPO / "tests" / "fixtures" / "weights.pth"
REFERENCE = REPO / "tests" / "fixtures" / "io.npz"
DATA = FIXTURE.read_bytes()
SHA = hashlib.sha256(DATA).hexdigest()
ENTRY = zoo.ZooEntry("yolact_tiny_test", "test/yolact-tiny", "yolact_tiny_test_1_10.pth",
                     "tiny", "ResNet-50 (1 block per stage)", 128, size=len(DATA), sha256=SHA)
PATH = f"/{ENTRY.repo_id}/resolve/{ENTRY.revision}/{ENTRY.filename}"
CACHED = ("yolact_tiny_test_1_10.pth", "yolact_tiny_test_1_10.weights.h5",
          "yolact_tiny_test_1_10.config.json", "yolact_tiny_test_1_10.verified.json")


class Hub(http.server.BaseHTTPRequestHandler):
    """The hub's resolve endpoint for one file; `mode` ok / truncate / corrupt."""

    mode = "ok"
    gets: typing.ClassVar[list] = []

    def log_message(self, *args):  # quiet
        pass

    def _headers(self, length, status=200, extra=()):
        self.send_response(status)
        for key, value in (("X-Repo-Commit", "a" * 40), ("ETag", f'"{SHA}"'),
                           ("X-Linked-Etag", f'"{SHA}"'), ("X-Linked-Size", str(len(DATA))),
                           ("Accept-Ranges", "bytes"), ("Content-Length", str(length)),
                           ("Content-Type", "application/octet-stream"), *extra):
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self):
        if self.path != PATH:
            self.send_error(404)
            return
        self._headers(len(DATA))

    def do_GET(self):
        if self.path != PATH:
            self.send_error(404)
            return
        type(self).gets.append(self.path)
        body = DATA
        if self.mode == "truncate":
            body = DATA[: len(DATA) // 3]
        elif self.mode == "corrupt":
            body = DATA[:1000] + bytes(b ^ 0xFF for b in DATA[1000:1010]) + DATA[1010:]
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            start = int(ranged[len("bytes="):].split("-")[0] or 0)
        self._headers(len(body) - start, 206 if start else 200,
                      [("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")]
                      if start else [])
        self.wfile.write(body[start:])


def serve():
    """(server, url) of a threading HTTP server on a free port of 127.0.0.1."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def hub_url():
    server, url = serve()
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def dead_url():
    """An endpoint where nothing listens (connection refused)."""
    server, url = serve()
    server.server_close()
    return url


@pytest.fixture(autouse=True)
def registered():
    zoo.register(ENTRY)
    Hub.mode, Hub.gets = "ok", []
    yield
    zoo.unregister(ENTRY.name)


def point_at(monkeypatch, url, cache, offline=False):
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv(hub.CACHE_ENV, str(cache))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.fixture(scope="module")
def converted(hub_url, tmp_path_factory):
    """The first call: (model, cfg, cache folder, GETs it made, what it printed)."""
    cache = tmp_path_factory.mktemp("cache")
    zoo.register(ENTRY)
    Hub.mode, Hub.gets = "ok", []
    lines = []
    with pytest.MonkeyPatch.context() as mp:
        point_at(mp, hub_url, cache)
        model, cfg = from_pretrained(ENTRY.name, log=lines.append)
    return model, cfg, cache, len(Hub.gets), lines


def official_agreement(model, cfg):
    """Rows of the converter's checks against the official outputs (tests/fixtures/io.npz)."""
    ref = dict(np.load(REFERENCE))
    outputs = run_reference_input(model, ref)
    return {row.name: row for row in raw_output_check(outputs, ref)
            + detection_check(cfg)(outputs, ref)}


def leftovers(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith((".part", ".incomplete"))
                  or ".tmp" in f)


def test_first_call_downloads_converts_and_reproduces_the_official_outputs(converted):
    model, cfg, cache, gets, lines = converted
    assert gets == 1
    assert (cfg.NAME, cfg.NUM_CLASSES, cfg.IMG_SIZE) == ("tiny", 3, 128)  # preset from the name
    assert sorted(os.listdir(cache)) == sorted((*CACHED, "yolact_tiny_test_1_10.lock"))
    assert hashlib.sha256((cache / CACHED[0]).read_bytes()).hexdigest() == SHA
    record = json.loads((cache / CACHED[3]).read_text())
    assert record["pth"]["sha256"] == SHA and record["pth"]["size"] == len(DATA)
    assert any(line.startswith("Downloading http://127.0.0.1:") for line in lines)
    assert any("loaded 121 tensors" in line for line in lines)  # the converter's report
    rows = official_agreement(model, cfg)
    assert rows["arrays"].ok, rows["arrays"].detail
    for name in ("loc", "conf_softmax", "mask_coef", "proto"):
        assert rows[name].ok and rows[name].value < 1e-3, (name, rows[name].value)
    assert (rows["det matched"].value, rows["det matched"].ok) == (100.0, True)


def test_later_calls_use_the_cache_without_any_network(converted, dead_url, monkeypatch):
    model, cfg, cache, _, _ = converted
    for offline in (False, True):  # connection refused, then HF_HUB_OFFLINE=1
        point_at(monkeypatch, dead_url, cache, offline=offline)
        lines = []
        path = pretrained_weights(ENTRY.name, log=lines.append)
        assert path == str(cache / CACHED[1]) and lines == []
        assert local_weights("yolact_tiny_test_1_10.pth") == path  # the file name works too
    again, cfg2 = from_pretrained(ENTRY.name)
    assert cfg2 == cfg and Hub.gets == []
    x = np.asarray(np.load(REFERENCE)["input_nchw"], np.float32).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(again(x)["loc"], model(x)["loc"])


@pytest.mark.parametrize("mode, says", [("truncate", "Consistency check failed"),
                                        ("corrupt", "SHA-256")])
def test_a_bad_transfer_is_one_error_and_leaves_nothing(hub_url, tmp_path, monkeypatch,
                                                        mode, says):
    point_at(monkeypatch, hub_url, tmp_path)
    Hub.mode = mode
    with pytest.raises(hub.DownloadError) as err:
        pretrained_weights(ENTRY.name, log=lambda _: None)
    message = str(err.value)
    assert says in message and "\n" not in message
    assert f"{hub_url}{PATH}" in message and str(tmp_path / CACHED[0]) in message
    assert not (tmp_path / CACHED[0]).exists() and not leftovers(tmp_path)
    assert not (tmp_path / CACHED[1]).exists()


def test_a_wrong_hash_in_the_table_is_refused(hub_url, tmp_path, monkeypatch):
    point_at(monkeypatch, hub_url, tmp_path)
    zoo.register(zoo.ZooEntry(**{**ENTRY.__dict__, "sha256": "0" * 64}))
    with pytest.raises(hub.DownloadError, match=f"differs from the expected {'0' * 64}"):
        hub.fetch(zoo.lookup(ENTRY.name), log=lambda _: None)
    assert os.listdir(tmp_path) == ["yolact_tiny_test_1_10.lock"]


@pytest.mark.parametrize("offline", [True, False])
def test_offline_without_the_file_names_the_url_and_where_to_put_it(dead_url, tmp_path,
                                                                    monkeypatch, offline):
    point_at(monkeypatch, dead_url, tmp_path, offline=offline)
    with pytest.raises(hub.DownloadError) as err:
        pretrained_weights(ENTRY.name, log=lambda _: None)
    message = str(err.value)
    assert ("HF_HUB_OFFLINE" in message) == offline
    assert f"download {dead_url}{PATH} and put it at {tmp_path / CACHED[0]}" in message
    # ... and a file put there by hand is used (offline, no record yet), then recorded
    shutil.copy(FIXTURE, tmp_path / CACHED[0])
    assert pretrained_weights(ENTRY.name, log=lambda _: None) == str(tmp_path / CACHED[1])
    assert json.loads((tmp_path / CACHED[3]).read_text())["pth"]["sha256"] == SHA


def test_an_unknown_name_lists_the_names(tmp_path, monkeypatch):
    point_at(monkeypatch, "http://127.0.0.1:9", tmp_path)
    model = build_model(get_config("tiny"))
    with pytest.raises(UnknownWeightsError) as err:
        load_weights_report(model, "yolact_bsae")
    message = str(err.value)
    for name in ("yolact_base", "yolact_plus_resnet50", "yolact_darknet53", ENTRY.name):
        assert name in message
    assert "local path" in message and os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="weights not found"):  # a path stays a path
        load_weights_report(model, str(tmp_path / "runs" / "missing.weights.h5"))


def test_a_local_path_wins_over_a_name(tmp_path, monkeypatch):
    point_at(monkeypatch, "http://127.0.0.1:9", tmp_path / "cache")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ENTRY.name).mkdir()  # a folder called like the name
    assert local_weights(ENTRY.name) == ENTRY.name


def copy_cache(converted, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(converted[2], cache)  # copy2: mtimes kept, records stay valid
    return cache


def test_damaged_cached_files_are_detected_and_replaced(converted, hub_url, tmp_path,
                                                        monkeypatch):
    cache = copy_cache(converted, tmp_path)
    point_at(monkeypatch, hub_url, cache)
    h5 = cache / CACHED[1]
    h5.write_bytes(h5.read_bytes()[:5000])  # truncated converted file: converted again
    lines = []
    assert pretrained_weights(ENTRY.name, log=lines.append) == str(h5)
    assert any("damaged" in line for line in lines) and Hub.gets == []
    model = build_model(get_config("tiny"))
    assert load_weights_report(model, ENTRY.name)["skipped"] == []
    pth = cache / CACHED[0]
    data = bytearray(pth.read_bytes())
    data[5000] ^= 0xFF  # same size, other content: fetched again
    pth.write_bytes(bytes(data))
    lines = []
    pretrained_weights(ENTRY.name, log=lines.append)
    assert len(Hub.gets) == 1 and any("fetching it again" in line for line in lines)
    assert hashlib.sha256(pth.read_bytes()).hexdigest() == SHA


def test_init_weights_by_name_into_another_class_count(converted, dead_url, tmp_path,
                                                       monkeypatch):
    """train.py -init_weights <name> on a 5-class dataset: `load_weights_report` (what
    the training loop calls) skips and reports exactly the class-dependent layers."""
    model, _, cache, _, _ = converted
    point_at(monkeypatch, dead_url, cache)
    target = build_model(get_config("tiny", NUM_CLASSES=5, CLASS_NAMES=tuple("abcde")))
    target(np.zeros((1, 128, 128, 3), np.float32))
    report = load_weights_report(target, ENTRY.name)
    assert report["path"] == str(cache / CACHED[1])
    assert report["skipped"] == ["prediction_layers.0.conf_layer", "semantic_seg_conv"]
    np.testing.assert_array_equal(target.head.mask_layer.kernel, model.head.mask_layer.kernel)
    assert tuple(target.semantic_seg_conv.kernel.shape)[-1] == 5


def script(*lines):
    """python -c source registering the test entry first (a child process knows no
    test-only entry)."""
    return "\n".join(["from yolact.weights.zoo import ZooEntry, register",
                      f"register({ENTRY!r})", *lines])


def test_two_processes_asking_at_once_share_one_download(hub_url, tmp_path):
    env = subprocess_env(HF_ENDPOINT=hub_url, YOLACT_CACHE=str(tmp_path))
    env.pop("HF_HUB_OFFLINE", None)
    code = script("from yolact.configs.pretrained import pretrained_weights",
                  "print('PATH', pretrained_weights('yolact_tiny_test'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-2000:]
        assert f"PATH {tmp_path / CACHED[1]}" in out
    assert len(Hub.gets) == 1
    assert sum("Downloading" in out for out, _ in outs) == 1
    assert hashlib.sha256((tmp_path / CACHED[0]).read_bytes()).hexdigest() == SHA
    record = json.loads((tmp_path / CACHED[3]).read_text())
    assert hub.still_valid(str(tmp_path / CACHED[1]), record["h5"]) and not leftovers(tmp_path)


def test_inference_cli_takes_a_name_and_its_preset(converted, dead_url, tmp_path):
    """inference.py -weights <name> with no -name: the cached model, its classes."""
    cache = copy_cache(converted, tmp_path)
    out = tmp_path / "out"
    env = subprocess_env(HF_ENDPOINT=dead_url, YOLACT_CACHE=str(cache))
    code = script("import sys", "from yolact.cli.inference import main",
                  f"sys.argv = ['inference.py', '-weights', {ENTRY.name!r}, '-input', "
                  f"'tests/fixtures/input.png', '-output_dir', {str(out)!r}, '-save_json', "
                  f"'-nojit_compile', '-score_threshold', '0.05']", "main()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Loaded weights from {cache / CACHED[1]}" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert [c["name"] for c in results["categories"]] == ["class_a", "class_b", "class_c"]
    assert (out / "input.png").exists() or (out / "input.jpg").exists()


def test_cli_errors_are_one_line(tmp_path, dead_url, monkeypatch, capsys):
    from tests.cli_utils import parsed_flags
    from yolact.cli import inference
    from yolact.utils.console import run_cli

    monkeypatch.delenv("YOLACT_DEBUG", raising=False)
    point_at(monkeypatch, dead_url, tmp_path / "cache")
    for weights, says in (("yolact_nope", "known names: yolact_base"),
                          ("yolact_bse", "not a pretrained name; did you mean 'yolact_base'? "
                                         "known names: yolact_base"),
                          (ENTRY.name, f"put it at {tmp_path / 'cache' / CACHED[0]}")):
        fv = parsed_flags(inference, "-weights", weights, "-input",
                          str(REPO / "tests" / "fixtures" / "input.png"),
                          "-output_dir", str(tmp_path / "out"))
        with pytest.raises(SystemExit) as exit_:
            run_cli("yolact.cli.inference", "run", fv)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1, err
        assert err[0].startswith("error: ") and says in err[0], err[0]


def test_initial_backbone_weights_follow_the_official_config():
    from yolact.weights.backbone import initial_backbone_file

    assert zoo.initial_weights_entry(get_config("coco").BACKBONE).filename == \
        "resnet101_reducedfc.pth"
    assert zoo.initial_weights_entry(get_config("yolact_resnet50").BACKBONE).filename == \
        "resnet50-19c8e357.pth"
    assert zoo.initial_weights_entry(get_config("yolact_darknet53").BACKBONE).filename == \
        "darknet53.pth"
    assert get_config("coco").BACKBONE_WEIGHTS == "imagenet"
    lines = []
    for name in ("shapes", "tiny", "shapes_plus", "tiny_plus"):  # demo presets: no download
        cfg = get_config(name)
        assert initial_backbone_file(cfg.BACKBONE, cfg.BACKBONE_BLOCKS, cfg.BACKBONE_WEIGHTS,
                                     lines.append) is None
    custom_tiny = get_config("coco", BACKBONE="resnet_tiny")  # a custom dataset's small net
    assert initial_backbone_file("resnet_tiny", None, custom_tiny.BACKBONE_WEIGHTS,
                                 lines.append) is None
    assert initial_backbone_file("resnet101", None, "none") is None  # -override ...=none
    assert initial_backbone_file("resnet50", (1, 1, 1, 1), "imagenet", lines.append) is None
    assert len(lines) == 2 and "random initialization" in lines[0]
    with pytest.raises(FileNotFoundError, match="BACKBONE_WEIGHTS='nope.pth'"):
        initial_backbone_file("resnet101", None, "nope.pth")


def test_the_zoo_table_names_existing_presets_and_the_official_files():
    from yolact.configs.presets import PRESETS

    assert [e.name for e in zoo.MODELS] == [
        "yolact_base", "yolact_resnet50", "yolact_darknet53", "yolact_im700",
        "yolact_plus_resnet50", "yolact_plus_base"]
    for entry in zoo.MODELS:
        assert entry.preset in PRESETS and entry.filename == f"{entry.name}_54_800000.pth"
        assert zoo.lookup(entry.stem) is entry and zoo.lookup(entry.filename) is entry
    assert zoo.hub_url(zoo.lookup("yolact_base"), hub.DEFAULT_ENDPOINT) == (
        "https://huggingface.co/dbolya/yolact-base/resolve/main/yolact_base_54_800000.pth")
    assert (zoo.lookup("yolact_plus_base").mask_ap, zoo.lookup("yolact_plus_base").fps) == \
        (34.6, 27.3)
