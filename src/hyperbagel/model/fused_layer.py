"""An inference copy of a decoder layer's understanding expert that runs the same function in fewer kernels.

A speculative draft step is one token through two or three decoder layers. At that size a CPU spends its time
launching operators, not multiplying. The module's layer (``MoTDecoderLayer``, kept as BAGEL writes it so that its
checkpoints load by name) runs 256 profiler events for one token over a 300-key cache; this copy runs 189. q, k
and v come from one projection, the MLP's gate and up from another, q and k are normalised and rotated together,
and a single query attends by two grouped matmuls. At the shipped teacher's size a layer then costs about 170 µs
instead of about 285 (``scripts/spec_phase_cost.py --layer``; docs/speculative.md, "The draft step's cost").
The weights are concatenated once, when the copy is built: it is a snapshot, which ``FusedStack`` rebuilds when a
weight of its layers has changed. Drafts decode through it always (``Draft.fused_layers``); the target's text steps
through it when asked (``Forwarder(fused_text=True)``), as its copies cost memory: a third of the language model's
weights again (the understanding expert's q/k/v and gate/up; o and down are shared, not copied).

Only the understanding expert exists here (no routing): text steps and drafts never carry VAE tokens. Same call
signature as ``MoTDecoderLayer`` with ``routing=None``; tests/model/test_fused_layer.py checks the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append, Attend, attend, resolve_attention
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, apply_rope


def _rms(x: Tensor, eps: float) -> Tensor:
    """RMSNorm without its scale, in fp32, cast back (as ``qwen2_mot.RMSNorm`` computes it)."""
    x32 = x.float()
    mean_square = (x32 * x32).sum(-1, keepdim=True).mul_(1 / x.shape[-1])  # mean() would copy its divisor
    return (x32 * torch.rsqrt(mean_square.add_(eps))).to(x.dtype)


class FusedLayer:
    """``FusedLayer(layer)(x, None, cos, sin, mask, cache, i, update_cache)`` ≡ ``layer(...)`` without gradients."""

    @staticmethod
    def sources(layer: MoTDecoderLayer) -> list[Tensor]:
        """The weights a copy of ``layer`` is made from."""
        attn, mlp = layer.self_attn, layer.mlp
        modules = [layer.input_layernorm, layer.post_attention_layernorm, attn.q_proj, attn.k_proj, attn.v_proj,
                   attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj]
        if attn.qk_norm:
            modules += [attn.q_norm, attn.k_norm]
        return [p for m in modules for p in m.parameters(recurse=False)]

    @torch.no_grad()
    def __init__(self, layer: MoTDecoderLayer):
        attn, mlp = layer.self_attn, layer.mlp
        H, Hkv = attn.num_heads, attn.num_kv_heads
        self.num_heads, self.num_kv_heads, self.head_dim = H, Hkv, attn.head_dim
        # a plain bool: compiled with dynamic shapes, ``H != Hkv`` on this object's ints would be a SymBool, which
        # scaled_dot_product_attention refuses (a graph break in every layer)
        self.grouped = H != Hkv
        self.eps = layer.input_layernorm.eps
        self.input_norm = layer.input_layernorm.weight.detach()
        self.post_norm = layer.post_attention_layernorm.weight.detach()
        self.qkv_weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
        self.qkv_bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).detach()
        # q and k are normalised together: one scale per head row [H + Hkv, head_dim]
        self.qk_norm = (torch.cat([attn.q_norm.weight.expand(H, -1), attn.k_norm.weight.expand(Hkv, -1)])
                        if attn.qk_norm else None)
        self.o_weight = attn.o_proj.weight.detach()
        self.gate_up_weight = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).detach()
        self.down_weight = mlp.down_proj.weight.detach()

    def __call__(self, x: Tensor, routing: None, cos: Tensor, sin: Tensor, mask: Tensor | Append | Attend | None,
                 cache: KVCache | None, layer: int, update_cache: bool) -> Tensor:
        if routing is not None:
            raise ValueError("FusedLayer holds the understanding expert only; routed (VAE) tokens need the module")
        B, S, _ = x.shape
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        h = self.input_norm * _rms(x, self.eps)
        qkv = F.linear(h, self.qkv_weight, self.qkv_bias).view(B, S, H + 2 * Hkv, hd)
        qk, v = qkv[:, :, :H + Hkv], qkv[:, :, H + Hkv:]
        if self.qk_norm is not None:
            qk = self.qk_norm * _rms(qk, self.eps)
        q, k = apply_rope(qk, cos, sin).transpose(1, 2).split([H, Hkv], dim=1)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.extend(layer, k, v, store=update_cache)
        a = resolve_attention(mask, S, k.shape[2], q.device)
        if S == 1 and a.mask is None and not a.causal and a.block_mask is None:
            # one query over every key: grouped matmuls beat the fused kernel's setup
            g = q.view(B, Hkv, H // Hkv, hd)
            w = torch.softmax((g @ k.transpose(-1, -2)) * hd**-0.5, dim=-1)
            out = (w @ v).view(B, 1, H * hd)
        else:
            out = attend(q, k, v, a, enable_gqa=self.grouped).transpose(1, 2).reshape(B, S, H * hd)
        x = x + F.linear(out, self.o_weight)
        gate, up = F.linear(self.post_norm * _rms(x, self.eps), self.gate_up_weight).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate) * up, self.down_weight)


class FusedStack:
    """``FusedLayer`` copies of some decoder layers, rebuilt when a weight they are made from has changed since the
    last call (another tensor, or an in-place update: the key is each weight's storage and version counter)."""

    def __init__(self, layers: Sequence[MoTDecoderLayer]):
        self._modules = list(layers)
        self._key: tuple | None = None
        self._fused: list[FusedLayer] = []

    def layers(self) -> list[FusedLayer]:
        key = tuple((p.data_ptr(), p._version) for m in self._modules for p in FusedLayer.sources(m))
        if key != self._key:
            self._fused, self._key = [FusedLayer(m) for m in self._modules], key
        return self._fused
