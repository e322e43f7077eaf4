"""The names the backbone registry knows: the one list the config checks against."""

BACKBONE_NAMES = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_tiny",
    "darknet53", "mobilenetv2",
)
# Channel attention after each stage (attention.py): none, "se" or "cbam".
ATTENTION_TYPES = (None, "se", "cbam")
# Backbones whose 3x3 convs can be deformable (YOLACT++, BACKBONE_DCN_LAYERS): the official
# ResNet Bottlenecks, and (this project's extension) the BasicBlock ResNets.
DCN_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet_tiny")
