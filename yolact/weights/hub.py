"""Zoo files (yolact.weights.zoo) downloaded once, verified, cached; offline after that.

The cache is ``$YOLACT_CACHE`` (default ``~/.cache/yolact``), flat:

    <stem>.pth             the official file, as downloaded (or put there by hand)
    <stem>.weights.h5      a COCO model converted with its preset (`convert_cached`)
    <stem>.config.json     the preset's config, beside it (what resolve_config reads)
    <stem>.verified.json   what was verified: size, sha256 and mtime of each file above
    <stem>.lock            the lock that serialises processes asking for the same file

The transfer is huggingface_hub's (a HEAD for the hub's SHA-256 and size, then a GET with
a progress bar) from ``$HF_ENDPOINT`` (default https://huggingface.co), refused under
``HF_HUB_OFFLINE=1``; both are read from the environment at each call. A download goes to a
temporary name beside the target and is renamed only once its size and SHA-256 are right
(the table's, else the hub's), so the cache never holds half a file. A cached file whose
size or mtime changed since it was verified is hashed again, and fetched (or converted)
again when it is damaged; a file with a valid record is used without any network call.
Every failure is one `DownloadError` (a ValueError) naming the URL and the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid

from yolact.utils.io import write_json_atomic
from yolact.weights.zoo import ZooEntry, hub_url

CACHE_ENV = "YOLACT_CACHE"
DEFAULT_ENDPOINT = "https://huggingface.co"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TRUE = ("1", "true", "yes", "on")


class DownloadError(ValueError):
    """A zoo file could not be fetched or failed its check; names the URL and the file."""


def cache_dir() -> str:
    """$YOLACT_CACHE, else ~/.cache/yolact."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get(CACHE_ENV) or os.path.join("~", ".cache", "yolact")))


def endpoint() -> str:
    """$HF_ENDPOINT (huggingface_hub's documented override), read now, else the hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """HF_HUB_OFFLINE=1 (huggingface_hub's offline switch), read now."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def cached_paths(entry: ZooEntry, folder: str | None = None) -> dict:
    """{"pth", "h5", "config", "record", "lock"}: where `entry`'s files live in the cache."""
    base = os.path.join(folder or cache_dir(), entry.stem)
    return {"pth": base + ".pth", "h5": base + ".weights.h5", "config": base + ".config.json",
            "record": base + ".verified.json", "lock": base + ".lock"}


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: str, sha256: str | None = None) -> dict:
    """{"size", "mtime_ns", "sha256"} of a file as it is now."""
    stat = os.stat(path)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "sha256": sha256 or sha256_of(path)}


def still_valid(path: str, record: dict | None) -> bool:
    """The file is what `record` verified: same size, and same mtime or same SHA-256."""
    if not record or not os.path.isfile(path):
        return False
    stat = os.stat(path)
    if stat.st_size != record.get("size"):
        return False
    return stat.st_mtime_ns == record.get("mtime_ns") or sha256_of(path) == record.get("sha256")


def read_record(path: str) -> dict:
    """The `.verified.json` sidecar ({} when absent or unreadable: nothing is trusted)."""
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def cache_lock(path: str, what: str, log=print):
    """An exclusive file lock (filelock), saying so when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=0.2)
    except Timeout:
        log(f"Waiting for another process fetching {what} (lock {path})")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _by_hand(entry: ZooEntry, url: str, dest: str) -> str:
    return f"download {url} and put it at {dest} (the file is used as it is)"


def download(entry: ZooEntry, dest: str, log=print) -> dict:
    """Fetch `entry` into `dest` (temporary name, checked, renamed); its file record.

    Checked: the size (the table's, else the hub's X-Linked-Size) and the SHA-256 (the
    table's, else the hub's LFS ETag when it is one). Raises DownloadError.
    """
    url = hub_url(entry, endpoint())
    if offline():
        raise DownloadError(f"{entry.name}: not in the cache and HF_HUB_OFFLINE is set; "
                            f"{_by_hand(entry, url, dest)}")
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    try:
        meta = get_hf_file_metadata(url, endpoint=endpoint())
    except Exception as err:  # noqa: BLE001 (any transport failure: one line, no traceback)
        raise DownloadError(f"cannot get {url} ({type(err).__name__}: "
                            f"{_first_line(err)}); {_by_hand(entry, url, dest)}") from None
    etag = (meta.etag or "").strip('"').lower()
    sha256 = entry.sha256 or (etag if _SHA256.fullmatch(etag) else None)
    size = entry.size or meta.size
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.{uuid.uuid4().hex[:8]}.part"
    log(f"Downloading {url} to {dest}")
    try:
        with open(tmp, "wb") as f:
            http_get(meta.location or url, f, headers={**build_hf_headers(),
                                                       "Accept-Encoding": "identity"},
                     expected_size=size, displayed_filename=entry.filename)
        got = os.path.getsize(tmp)
        if size is not None and got != size:
            raise DownloadError(f"{url}: got {got} bytes, expected {size}")
        digest = sha256_of(tmp)
        if sha256 is not None and digest != sha256:
            raise DownloadError(f"{url}: SHA-256 {digest} differs from the expected {sha256}")
        os.replace(tmp, dest)
    except DownloadError as err:
        raise DownloadError(f"{err} (nothing written to {dest}); try again, or "
                            f"{_by_hand(entry, url, dest)}") from None
    except Exception as err:  # noqa: BLE001
        raise DownloadError(f"downloading {url} to {dest} failed ({type(err).__name__}: "
                            f"{_first_line(err)}); nothing written; try again, or "
                            f"{_by_hand(entry, url, dest)}") from None
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
    if sha256 is None:
        log(f"note: {url} gave no SHA-256 to check against; checked its size only")
    return file_record(dest, digest)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _ensure_pth(entry: ZooEntry, paths: dict, record: dict, log) -> None:
    """Make record["pth"] describe a good `<stem>.pth` in the cache (fetching it)."""
    pth = paths["pth"]
    if still_valid(pth, record.get("pth")):
        return
    if os.path.isfile(pth) and record.get("pth"):
        log(f"The cached {pth} changed since it was verified (damaged): fetching it again")
        os.remove(pth)
    elif os.path.isfile(pth):  # put there by hand (or a run stopped before its record)
        digest = sha256_of(pth)
        if (entry.sha256 and digest != entry.sha256) or (
                entry.size and os.path.getsize(pth) != entry.size):
            log(f"{pth} is not the expected file (size or SHA-256 differ): fetching it again")
            os.remove(pth)
        else:
            log(f"Using {pth} (found in the cache)")
            record["pth"] = file_record(pth, digest)
            return
    verified = (record.get("pth") or {}).get("sha256")
    record["pth"] = download(entry, pth, log)
    if record["pth"]["sha256"] != verified:  # not the file the .weights.h5 came from
        record.pop("h5", None)
        record.pop("config", None)
    write_json_atomic(paths["record"], record, indent=1)


def fetch(entry: ZooEntry, log=print) -> str:
    """The verified `<stem>.pth` of `entry` in the cache, downloaded the first time."""
    paths = cached_paths(entry)
    record = read_record(paths["record"])
    if still_valid(paths["pth"], record.get("pth")):
        return paths["pth"]  # no lock, no network: the common case
    os.makedirs(os.path.dirname(paths["pth"]), exist_ok=True)
    with cache_lock(paths["lock"], entry.filename, log):
        record = read_record(paths["record"])  # another process may have done it
        _ensure_pth(entry, paths, record, log)
        write_json_atomic(paths["record"], record, indent=1)
    return paths["pth"]


def _complete(paths: dict) -> bool:
    """Converted file and config intact, and the .pth intact or absent (deleted to save
    space: not needed any more)."""
    record = read_record(paths["record"])
    return (still_valid(paths["h5"], record.get("h5"))
            and still_valid(paths["config"], record.get("config"))
            and (not os.path.exists(paths["pth"]) or still_valid(paths["pth"], record.get("pth"))))


def converted_if_cached(entry: ZooEntry) -> str | None:
    """`<stem>.weights.h5` when it, its config (and the .pth if present) are intact."""
    paths = cached_paths(entry)
    return paths["h5"] if _complete(paths) else None


def convert_cached(entry: ZooEntry, convert_fn, log=print) -> str:
    """`<stem>.weights.h5` (+ `<stem>.config.json`) of a COCO model, made once.

    `convert_fn(pth_path, h5_path)` writes both (yolact.configs.pretrained passes the
    official converter with the entry's preset). Everything happens under the entry's lock;
    when the cached files are intact no network call is made.
    """
    paths = cached_paths(entry)
    if _complete(paths):
        return paths["h5"]
    os.makedirs(os.path.dirname(paths["pth"]), exist_ok=True)
    with cache_lock(paths["lock"], entry.filename, log):
        record = read_record(paths["record"])
        if still_valid(paths["h5"], record.get("h5")) and \
                still_valid(paths["config"], record.get("config")):
            _ensure_pth(entry, paths, record, log)  # only the .pth was damaged
        else:
            if record.get("h5") and os.path.isfile(paths["h5"]):
                log(f"The cached {paths['h5']} changed since it was written (damaged): "
                    f"converting again")
            _ensure_pth(entry, paths, record, log)
            for key in ("h5", "config"):
                record.pop(key, None)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(paths[key])
            log(f"Converting {paths['pth']} (preset {entry.preset}) to {paths['h5']}")
            convert_fn(paths["pth"], paths["h5"])
            record["h5"] = file_record(paths["h5"])
            record["config"] = file_record(paths["config"])
        write_json_atomic(paths["record"], record, indent=1)
    return paths["h5"]
