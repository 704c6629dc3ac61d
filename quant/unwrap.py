"""The module under a torch.compile wrapper, whose own names all start with "_orig_mod.": walk or name layers of it."""
import torch.nn as nn


def unwrap(model: nn.Module) -> nn.Module:
    """`model` itself, or the module a torch.compile'd `model` wraps (so layer names read "layer1.0.conv1")."""
    return getattr(model, "_orig_mod", model)
