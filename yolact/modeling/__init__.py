"""The network: Keras layers (torch-exact padding and init), backbones (a registry),
FPN, protonet, prediction head, `YolactModel`, and the factory that builds it from a config."""
