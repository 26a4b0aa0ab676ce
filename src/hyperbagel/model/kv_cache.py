"""Per-layer key/value cache: keys and values ``[B, H_kv, T, head_dim]``, stored after QK-norm and RoPE.

Stored positions live in per-layer buffers written in place: a buffer is allocated to fit what is stored first (a
prefilled context takes no slack) and grows by doubling when later stores outgrow it, so decoding token by token
copies the cache O(log T) times instead of once per token. ``crop`` only moves the end. Caches made by ``copy`` share
their buffers until one of them stores (copy on write), so the branches of a prefilled context cost nothing until
they diverge. A store that autograd must see through (the draft's training-time test) concatenates instead, as an
in-place write into a buffer would change tensors saved for backward.
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    def __init__(self, num_layers: int):
        self._k: list[Tensor | None] = [None] * num_layers
        self._v: list[Tensor | None] = [None] * num_layers
        self._len = [0] * num_layers
        self._own = [True] * num_layers  # False: the buffer may be shared with another cache (copy on write)
        self.allocations = 0  # buffers allocated by stores (for tests and measurements)

    @property
    def keys(self) -> list[Tensor | None]:
        return [None if k is None else k[:, :, :n] for k, n in zip(self._k, self._len)]

    @property
    def values(self) -> list[Tensor | None]:
        return [None if v is None else v[:, :, :n] for v, n in zip(self._v, self._len)]

    @property
    def length(self) -> int:
        return self._len[0]

    def extend(self, layer: int, k: Tensor, v: Tensor, store: bool = True) -> tuple[Tensor, Tensor]:
        """Return ``[cached ‖ new]`` keys and values for ``layer``; keep them when ``store``."""
        old_k, old_v, n = self._k[layer], self._v[layer], self._len[layer]
        m = k.shape[2]
        if old_k is None:
            if store:
                self._set(layer, k, v, m, own=False)  # the caller's tensors, kept as they are: no copy
            return k, v
        if not store or k.requires_grad or v.requires_grad:
            k, v = torch.cat([old_k[:, :, :n], k], dim=2), torch.cat([old_v[:, :, :n], v], dim=2)
            if store:
                self._set(layer, k, v, n + m, own=False)
            return k, v
        if not self._own[layer] or old_k.shape[2] < n + m or old_k.dtype != k.dtype:
            capacity = max(n + m, 2 * old_k.shape[2])
            shape = (*old_k.shape[:2], capacity, old_k.shape[3])
            buf_k, buf_v = old_k.new_empty(shape, dtype=k.dtype), old_v.new_empty(shape, dtype=v.dtype)
            buf_k[:, :, :n], buf_v[:, :, :n] = old_k[:, :, :n], old_v[:, :, :n]
            self.allocations += 1
            self._set(layer, buf_k, buf_v, n, own=True)
        buf_k, buf_v = self._k[layer], self._v[layer]
        buf_k[:, :, n:n + m], buf_v[:, :, n:n + m] = k, v
        self._len[layer] = n + m
        return buf_k[:, :, :n + m], buf_v[:, :, :n + m]

    def _set(self, layer: int, k: Tensor, v: Tensor, length: int, own: bool) -> None:
        self._k[layer], self._v[layer], self._len[layer], self._own[layer] = k, v, length, own

    def crop(self, length: int) -> None:
        """Keep the first ``length`` cached positions (drop rejected speculative tokens)."""
        self._len = [min(n, length) for n in self._len]

    def keep(self, index: Tensor) -> None:
        """Keep the cached positions ``index`` (1-D, shared by the batch), in that order."""
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                self._set(i, k.index_select(2, index), v.index_select(2, index), len(index), own=True)

    def select(self, batch_index: Tensor) -> KVCache:
        """A cache holding rows ``batch_index`` of this one (shares no storage with in-place edits)."""
        out = KVCache(len(self._k))
        for i, (k, v) in enumerate(zip(self.keys, self.values)):
            if k is not None:
                index = batch_index.to(k.device)  # index_select takes no index from another device
                out._set(i, k.index_select(0, index), v.index_select(0, index), k.shape[2], own=True)
        return out

    def copy(self) -> KVCache:
        """A cache with the same positions; the two share buffers until either stores (copy on write)."""
        out = KVCache(len(self._k))
        out._k, out._v, out._len = list(self._k), list(self._v), list(self._len)
        out._own = [False] * len(self._k)
        self._own = [False] * len(self._k)
        return out
