"""The model zoo: every official YOLACT file this project fetches by name, in one table.

COCO models: the official README's model table (github.com/dbolya/yolact, "Evaluation"):
box / mask AP on COCO test-dev and fps on a Titan Xp; the files are the README's links,
now hosted on the Hugging Face Hub (`dbolya/yolact-*`). ImageNet initial weights: the
`path` of each backbone in the official `data/config.py` (`resnet101_backbone`
`resnet101_reducedfc.pth`, `resnet50_backbone` `resnet50-19c8e357.pth`,
`darknet53_backbone` `darknet53.pth`; the YOLACT++ DCN backbones take the same files), in
the hub repo `dbolya/yolact-initial-weights`.

SHA-256 and size are recorded where known; for the official files they are not (this table
was written offline) and the download is checked against the hub's own SHA-256 (the LFS
ETag) and size instead (`yolact.weights.hub`). A new entry is one row here, or
`register(entry)` at run time (tests register a tiny local one).
"""

from __future__ import annotations

import dataclasses

HUB_REVISION = "main"


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    """One downloadable file.

    name: what users type (`-weights yolact_base`); repo_id / filename / revision: where it
    is on the hub; preset: the config preset it converts into (None: ImageNet backbone
    weights, not converted); backbone, input_size: for the README table; mask_ap, fps:
    official COCO test-dev mask AP and Titan Xp fps (None: not a COCO model); size (bytes),
    sha256 (hex): what the file must be, None where unknown.
    """

    name: str
    repo_id: str
    filename: str
    preset: str | None
    backbone: str
    input_size: int | None = None
    mask_ap: float | None = None
    fps: float | None = None
    size: int | None = None
    sha256: str | None = None
    revision: str = HUB_REVISION

    @property
    def stem(self) -> str:
        """The file name without `.pth`: the name of the cached files."""
        return self.filename.removesuffix(".pth")

    @property
    def is_model(self) -> bool:
        """A whole YOLACT network (converted with its preset), not a backbone."""
        return self.preset is not None


# Official README model table (Titan Xp fps, COCO test-dev mask AP); presets of
# yolact/configs/presets.py.
MODELS = (
    ZooEntry("yolact_base", "dbolya/yolact-base", "yolact_base_54_800000.pth",
             "yolact_base", "ResNet-101", 550, 29.8, 33.5),
    ZooEntry("yolact_resnet50", "dbolya/yolact-resnet50", "yolact_resnet50_54_800000.pth",
             "yolact_resnet50", "ResNet-50", 550, 28.2, 45.0),
    ZooEntry("yolact_darknet53", "dbolya/yolact-darknet53", "yolact_darknet53_54_800000.pth",
             "yolact_darknet53", "DarkNet-53", 550, 28.7, 40.0),
    ZooEntry("yolact_im700", "dbolya/yolact-im700", "yolact_im700_54_800000.pth",
             "yolact_im700", "ResNet-101", 700, 29.9, 23.6),
    ZooEntry("yolact_plus_resnet50", "dbolya/yolact-plus-resnet50",
             "yolact_plus_resnet50_54_800000.pth", "yolact_plus_resnet50", "ResNet-50 + DCN",
             550, 34.1, 33.5),
    ZooEntry("yolact_plus_base", "dbolya/yolact-plus-base", "yolact_plus_base_54_800000.pth",
             "yolact_plus_base", "ResNet-101 + DCN", 550, 34.6, 27.3),
)

# Official data/config.py backbone `path` fields: {our BACKBONE name: file}.
_INITIAL_REPO = "dbolya/yolact-initial-weights"
INITIAL_WEIGHTS = {
    "resnet101": ZooEntry("resnet101_reducedfc", _INITIAL_REPO, "resnet101_reducedfc.pth",
                          None, "ResNet-101"),
    "resnet50": ZooEntry("resnet50-19c8e357", _INITIAL_REPO, "resnet50-19c8e357.pth", None,
                         "ResNet-50"),
    "darknet53": ZooEntry("darknet53", _INITIAL_REPO, "darknet53.pth", None, "DarkNet-53"),
}

_REGISTERED: dict = {}  # register(): entries added at run time (tests, users' own files)


def register(entry: ZooEntry) -> ZooEntry:
    """Add (or replace) an entry known by `entry.name`; returns it."""
    _REGISTERED[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Forget an entry added with `register`."""
    _REGISTERED.pop(name, None)


def entries() -> tuple:
    """Every entry: the COCO models, the ImageNet backbones, then registered ones."""
    return (*MODELS, *INITIAL_WEIGHTS.values(), *_REGISTERED.values())


def known_names() -> list:
    """The names `lookup` accepts (besides the file names, with or without `.pth`)."""
    return [e.name for e in entries()]


def lookup(name: str) -> ZooEntry | None:
    """The entry named `name` (`yolact_base`, `yolact_base_54_800000`,
    `yolact_base_54_800000.pth`), or None."""
    if not name:
        return None
    for entry in reversed(entries()):  # registered entries win
        if name in (entry.name, entry.filename, entry.stem):
            return entry
    return None


def initial_weights_entry(backbone: str) -> ZooEntry | None:
    """The official ImageNet file of a backbone (None: it has none, e.g. resnet_tiny)."""
    return INITIAL_WEIGHTS.get(backbone)


def hub_url(entry: ZooEntry, endpoint: str) -> str:
    """https://huggingface.co/{repo_id}/resolve/{revision}/{filename} on `endpoint`."""
    return f"{endpoint.rstrip('/')}/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}"
