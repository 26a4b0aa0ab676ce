"""Per-layer key/value cache: keys and values ``[B, H_kv, T, head_dim]``, stored after QK-norm and RoPE."""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    def __init__(self, num_layers: int):
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def extend(self, layer: int, k: Tensor, v: Tensor, store: bool = True) -> tuple[Tensor, Tensor]:
        """Return ``[cached ‖ new]`` keys and values for ``layer``; keep them when ``store``."""
        old_k, old_v = self.keys[layer], self.values[layer]
        if old_k is not None:
            k, v = torch.cat([old_k, k], dim=2), torch.cat([old_v, v], dim=2)
        if store:
            self.keys[layer], self.values[layer] = k, v
        return k, v

    def crop(self, length: int) -> None:
        """Keep the first ``length`` cached positions (drop rejected speculative tokens)."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self.keys[i], self.values[i] = k[:, :, :length], v[:, :, :length]

    def keep(self, index: Tensor) -> None:
        """Keep the cached positions ``index`` (1-D, shared by the batch), in that order."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self.keys[i], self.values[i] = k.index_select(2, index), v.index_select(2, index)

    def select(self, batch_index: Tensor) -> KVCache:
        """A cache holding rows ``batch_index`` of this one (shares no storage with in-place edits)."""
        out = KVCache(len(self.keys))
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                out.keys[i], out.values[i] = k.index_select(0, batch_index), v.index_select(0, batch_index)
        return out

    def copy(self) -> KVCache:
        out = KVCache(len(self.keys))
        out.keys, out.values = list(self.keys), list(self.values)  # tensors are never modified in place
        return out
