"""The Qwen2-style language model as a mixture of transformers (BAGEL's ``Qwen2MoTDecoderLayer``).

Every per-token module exists twice: the understanding copy (original Qwen2 name) and the generation copy
(``*_moe_gen``). Tokens are routed by a boolean ``gen`` mask (VAE latent tokens use the generation copy), turned once
per forward into row indices (``Routing``), and all tokens meet in one joint attention. Parameter names are BAGEL's,
so ``ema.safetensors`` loads by name.

Layout: ``[B, S, D]`` with explicit RoPE positions ``[B, S]``. Attention over ``[cached keys ‖ new keys]`` follows
either a block rule (``masks.Append``: full or causal blocks over a cache, turned into the cheapest fused attention
call) or an explicit boolean mask ``[B, 1, S, T]`` (True = may attend; packed training); see ``masks.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.model.config import LLMConfig
from hyperbagel.model.embeddings import lookup_table
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append, Attend, Packed, attend, resolve_attention

Module = Callable[[Tensor], Tensor]


class RMSNorm(nn.Module):
    """Qwen2's RMSNorm: normalise in fp32, cast back, then scale."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


@dataclass(frozen=True)
class Routing:
    """Which tokens of a ``[B, S]`` batch each expert takes, as flat row indices. Built once per forward (``of``: its
    one ``nonzero`` is the forward's only host synchronisation for routing; ``framed``: none), so no decoder layer
    waits on the host."""

    und: Tensor  # flat indices of understanding tokens
    gen: Tensor  # flat indices of generation tokens

    @classmethod
    def of(cls, gen: Tensor | None) -> Routing | None:
        """None when every token is an understanding token (or ``gen`` is None)."""
        if gen is None:
            return None
        flat = gen.reshape(-1)
        gen_rows = flat.nonzero().squeeze(1)
        if gen_rows.numel() == 0:
            return None
        return cls((~flat).nonzero().squeeze(1), gen_rows)

    @classmethod
    def framed(cls, B: int, S: int, device: torch.device) -> Routing:
        """The routing of ``B`` image blocks of ``S`` tokens whose inner tokens take the generation expert and whose
        two markers do not (a VAE block): ``Routing.of`` of that mask, built by arithmetic, so a compiled denoising
        forward neither breaks its graph nor waits on the host for it."""
        starts = torch.arange(B, device=device) * S  # made on the device: no copy from the host either
        und = torch.stack([starts, starts + (S - 1)], dim=1).reshape(-1)
        gen = (starts[:, None] + torch.arange(1, S - 1, device=device)).reshape(-1)
        return cls(und, gen)


def route(x: Tensor, routing: Routing | None, und_fn: Module, gen_fn: Module) -> Tensor:
    """Apply ``und_fn`` to understanding tokens and ``gen_fn`` to generation tokens of ``x [..., D]``: each expert
    runs once on its own rows (gathered by index, so shapes are known without asking the device)."""
    if routing is None:
        return und_fn(x)
    if routing.und.numel() == 0:
        return gen_fn(x)
    flat = x.reshape(-1, x.shape[-1])
    und_out = und_fn(flat.index_select(0, routing.und))
    gen_out = gen_fn(flat.index_select(0, routing.gen))
    out = und_out.new_empty(flat.shape[0], und_out.shape[-1])
    out.index_copy_(0, routing.und, und_out)
    out.index_copy_(0, routing.gen, gen_out.to(und_out.dtype))
    return out.view(*x.shape[:-1], und_out.shape[-1])


def keys_after(cache: KVCache | None, new: int) -> int:
    """How many keys ``new`` tokens attend over: the cached ones and themselves."""
    return new + (cache.length if cache is not None else 0)


def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Rotate-half RoPE tables for integer positions ``[B, S]`` → cos, sin ``[B, S, head_dim]`` (computed in fp32)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).float() / head_dim
    inv_freq = 1.0 / (theta**exponents)
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """``x`` is ``[B, S, H, d]``; cos/sin ``[B, S, d]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, :, None, :] + rotated * sin[:, :, None, :]


class MoTAttention(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        d, hd = cfg.hidden_size, cfg.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, hd
        for suffix in ("", "_moe_gen"):
            setattr(self, f"q_proj{suffix}", nn.Linear(d, cfg.num_heads * hd, bias=True))
            setattr(self, f"k_proj{suffix}", nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f"v_proj{suffix}", nn.Linear(d, cfg.num_kv_heads * hd, bias=True))
            setattr(self, f"o_proj{suffix}", nn.Linear(cfg.num_heads * hd, d, bias=False))
            if cfg.qk_norm:
                setattr(self, f"q_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))
                setattr(self, f"k_norm{suffix}", RMSNorm(hd, cfg.rms_norm_eps))
        self.qk_norm = cfg.qk_norm

    def _qkv(self, x: Tensor, suffix: str) -> Tensor:
        b = x.shape[:-1]
        q = getattr(self, f"q_proj{suffix}")(x).view(*b, self.num_heads, self.head_dim)
        k = getattr(self, f"k_proj{suffix}")(x).view(*b, self.num_kv_heads, self.head_dim)
        v = getattr(self, f"v_proj{suffix}")(x).view(*b, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q = getattr(self, f"q_norm{suffix}")(q)
            k = getattr(self, f"k_norm{suffix}")(k)
        return torch.cat([q, k, v], dim=-2).flatten(-2)

    def forward(
        self,
        x: Tensor,
        routing: Routing | None,
        cos: Tensor,
        sin: Tensor,
        mask: Tensor | Append | Packed | Attend | None,
        cache: KVCache | None,
        layer: int,
        update_cache: bool,
    ) -> Tensor:
        B, S, _ = x.shape
        H, Hkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = route(x, routing, lambda t: self._qkv(t, ""), lambda t: self._qkv(t, "_moe_gen"))
        qkv = qkv.view(B, S, H + 2 * Hkv, hd)
        q, k, v = qkv.split([H, Hkv, Hkv], dim=2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            k, v = cache.extend(layer, k, v, store=update_cache)
        out = attend(q, k, v, resolve_attention(mask, S, k.shape[2], q.device), enable_gqa=H != Hkv)
        out = out.transpose(1, 2).reshape(B, S, H * hd)
        return route(out, routing, self.o_proj, self.o_proj_moe_gen)


class MoTDecoderLayer(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.self_attn = MoTAttention(cfg)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.mlp_moe_gen = SwiGLU(cfg.hidden_size, cfg.intermediate_size)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.input_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, routing, cos, sin, mask, cache, layer, update_cache) -> Tensor:
        h = route(x, routing, self.input_layernorm, self.input_layernorm_moe_gen)
        x = x + self.self_attn(h, routing, cos, sin, mask, cache, layer, update_cache)
        h = route(x, routing, self.post_attention_layernorm, self.post_attention_layernorm_moe_gen)
        h = route(h, routing, self.mlp, self.mlp_moe_gen)
        return x + h


@dataclass
class LMOutput:
    hidden: Tensor  # [B, S, D] after the (routed) final norm
    layer_states: list[Tensor] | None  # output of every decoder layer, before the final norm


class Qwen2Model(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = lookup_table(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(MoTDecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        gen: Tensor | Routing | None = None,
        mask: Tensor | Append | Packed | Attend | None = None,
        cache: KVCache | None = None,
        update_cache: bool = True,
        return_layer_states: bool = False,
        layers: Sequence[Callable] | None = None,
    ) -> LMOutput:
        """Run embedded tokens ``x [B, S, D]`` through the decoder layers.

        ``gen`` marks generation-expert tokens (or is their ``Routing``, built by the caller); ``mask`` is a block
        rule (``Append``) or a boolean ``[B, 1, S, T+S]`` over cache + new tokens (None: all visible);
        ``update_cache=False`` attends to the cache without storing the new keys (denoising steps). ``layers``: other
        callables computing the decoder layers (``FusedLayer`` copies for text-only steps; default: the modules).
        """
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, x.dtype)
        routing = gen if isinstance(gen, Routing) else Routing.of(gen)
        mask = resolve_attention(mask, x.shape[1], keys_after(cache, x.shape[1]), x.device)
        states = [] if return_layer_states else None
        for i, layer in enumerate(self.layers if layers is None else layers):
            x = layer(x, routing, cos, sin, mask, cache, i, update_cache)
            if states is not None:
                states.append(x)
        return LMOutput(route(x, routing, self.norm, self.norm_moe_gen), states)


class Qwen2ForCausalLM(nn.Module):
    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.model = Qwen2Model(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
