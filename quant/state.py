"""Quantizer state that rides along in checkpoints yet lets a full-precision checkpoint load strictly."""
from __future__ import annotations

import torch.nn as nn


class OptionalStateMixin:
    """A quantizer's parameters and buffers load from a state_dict, and may be absent from it as a whole.

    Swapping a layer keeps every full-precision key (`weight`, `bias`) and adds quantizer keys (`wq.scale`,
    `aq.upper`, `gq.gamma`, ...). A checkpoint saved before quantization has none of them; it should still load
    with `strict=True` and leave the quantizer fresh (initialised on the first batch). A checkpoint that has only
    some of them is corrupt and still fails. `_after_load` lets a subclass refresh python mirrors of its buffers.
    """

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                               error_msgs):
        module: nn.Module = self  # type: ignore[assignment]
        own = [prefix + name for name, _ in module.named_parameters(recurse=False)]
        own += [prefix + name for name, _ in module.named_buffers(recurse=False)
                if name not in module._non_persistent_buffers_set]
        absent = [key for key in own if key not in state_dict]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,  # type: ignore[misc]
                                      unexpected_keys, error_msgs)
        if own and len(absent) == len(own):  # a full-precision checkpoint: keep this quantizer fresh
            for key in absent:
                missing_keys.remove(key)
        else:
            self._after_load()

    def _after_load(self) -> None:
        """Called after this quantizer's own state was loaded; default: nothing to refresh."""
