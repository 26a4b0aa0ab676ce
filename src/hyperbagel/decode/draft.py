"""The Hyper-Bagel draft model (paper §3.1, method.md "Understanding"); its ablation switches are
``DraftConfig`` (``decode/draft_config.py``).

For every position ``i`` the target hands over ``H_i [L, D]``, its hidden state after each of its ``L`` layers.

1. Meta-query aggregation: ``Q = 3`` learnable queries attend over the ``L`` states of one token (attention along
   the layer axis, never across tokens) → ``[Q·D]``; its output projection starts at zero.
2. Skip connection: add ``concat(H[low], H[mid], H[high])``, EAGLE-3's three layers ``(2, L//2, L−3)``.
3. ``fc1: 3D → D``, then ``Dec``, one decoder layer of the target's architecture with its own KV cache → ``F_in``.
4. Each draft step: ``u = fc2(concat(embed(token), feature))``, ``N = 2`` decoder layers initialised from the
   target's last two understanding layers, then the target's final norm and LM head → the next-token logits. The
   first step's feature is ``F_in``; later steps use the draft's own previous output (pre-norm).

Zero-init (paper §3.1.2): the aggregation's output projection, Dec's ``o_proj`` and ``down_proj``, ``fc1`` and
``fc2``. Taken literally this starves layers of gradient: with ``fc2 = 0`` nothing reaches ``F_in``, and with
``fc1 = 0`` nothing reaches the aggregation and Dec's MLP input is zero. So each zero-initialised layer gets a fixed
identity path around the zero-initialised layer after it (``bypass``): ``x = fc1(s) + s[high]`` and
``u = fc2([e, f]) + f``. At initialisation the draft therefore reads ``H[high] = H[L−3]``, the very input of the
target layer its first draft layer is copied from: it starts as the target's own top applied one position late, and
every zero-initialised layer gets a non-zero gradient on the first step (``tests/decode/test_draft.py``).

The target's token embedding, final norm and LM head are shared and frozen (``TargetHead``); they are not part of
the draft's parameters or checkpoint, which records a fingerprint of them instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.decode.draft_config import DraftConfig
from hyperbagel.errors import HyperBagelError
from hyperbagel.model.config import LLMConfig
from hyperbagel.model.fused_layer import FusedLayer, FusedStack
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append, resolve_attention
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, Qwen2Model, RMSNorm, keys_after, rope_cos_sin

DRAFT_FILE, DRAFT_CONFIG = "draft.safetensors", "draft.json"


def understanding_layer(cfg: LLMConfig) -> MoTDecoderLayer:
    """A decoder layer of the target's architecture without the generation expert (the draft only reads text and
    target features, so ``gen`` is always None and only the understanding weights exist)."""
    layer = MoTDecoderLayer(cfg)
    for module in (layer, layer.self_attn):
        for name in [n for n, _ in module.named_children() if n.endswith("_moe_gen")]:
            setattr(module, name, None)
    return layer


class MetaQueryAggregation(nn.Module):
    """``Q`` learnable queries cross-attend over the ``L`` layer states of each token: ``[B, S, L, D]`` →
    ``[B, S, Q·D]``."""

    def __init__(self, cfg: LLMConfig, num_queries: int):
        super().__init__()
        D, L = cfg.hidden_size, cfg.num_layers
        self.num_heads = cfg.num_heads
        self.queries = nn.Parameter(torch.randn(num_queries, D) * 0.02)
        self.layer_embed = nn.Parameter(torch.randn(L, D) * 0.02)  # which layer a state comes from
        self.norm = RMSNorm(D, cfg.rms_norm_eps)  # layer states differ in scale by orders of magnitude
        self.k_proj = nn.Linear(D, D)
        self.v_proj = nn.Linear(D, D)
        self.o_proj = nn.Linear(D, D, bias=False)

    def forward(self, states: Tensor) -> Tensor:
        """Multi-head attention of the queries over the layer axis, with the key and value projections folded into
        the queries and the output: ``q·(W_k h + b_k) = (W_kᵀ q)·h + const`` and ``Σ a (W_v h + b_v) = W_v (Σ a h)
        + b_v``. The same function as projecting all ``L`` states (``reference``) with a fraction of the work, since
        there are 3 queries and ``L`` states per token."""
        *lead, L, D = states.shape
        H = self.num_heads
        hd, Q = D // H, self.queries.shape[0]
        h = (self.norm(states) + self.layer_embed).reshape(-1, L, D)  # [N, L, D]
        N = h.shape[0]
        q = self.queries.view(Q, H, hd) * hd**-0.5
        qk = torch.einsum("qhe,hed->hqd", q, self.k_proj.weight.view(H, hd, D)).reshape(H * Q, D)
        attn = torch.softmax((h.reshape(N * L, D) @ qk.t()).view(N, L, H * Q), dim=1)
        mixed = torch.bmm(attn.transpose(1, 2), h)  # [N, H·Q, D]: each head's weighted sum of the states
        mixed = mixed.view(N, H, Q, D).permute(1, 0, 2, 3).reshape(H, N * Q, D)
        out = torch.bmm(mixed, self.v_proj.weight.view(H, hd, D).transpose(1, 2))  # [H, N·Q, hd]
        out = out.view(H, N, Q, hd).permute(1, 2, 0, 3).reshape(N, Q, D) + self.v_proj.bias
        return self.o_proj(out).reshape(*lead, Q * D)

    def reference(self, states: Tensor) -> Tensor:
        """The same attention with every state projected to keys and values (for tests)."""
        *lead, L, D = states.shape
        H, hd = self.num_heads, D // self.num_heads
        h = self.norm(states) + self.layer_embed
        k = self.k_proj(h).view(*lead, L, H, hd).transpose(-2, -3)  # [..., H, L, hd]
        v = self.v_proj(h).view(*lead, L, H, hd).transpose(-2, -3)
        q = self.queries.view(-1, H, hd).transpose(0, 1).expand(*lead, H, -1, hd)  # [..., H, Q, hd]
        out = F.scaled_dot_product_attention(q, k, v).transpose(-2, -3).reshape(*lead, -1, D)
        return self.o_proj(out).flatten(-2)


@dataclass(frozen=True)
class DraftLayers:
    """A draft's decoder layers in their decoding form (``Draft.fused_layers``)."""

    dec: FusedLayer | None
    layers: list[FusedLayer]


class Draft(nn.Module):
    """Parameters and single-pass functions only; drafting loops live in ``speculative.py`` and the training loop in
    ``recipes/draft.py``. Rows are ``[B, S, ...]`` with explicit RoPE positions and a block rule (``Append``) or a
    boolean mask over ``[cached ‖ new]`` keys, as in the target (``model/qwen2_mot.py``)."""

    def __init__(self, cfg: DraftConfig, llm: LLMConfig):
        super().__init__()
        self.cfg, self.llm = cfg, llm
        D = llm.hidden_size
        self.skip = cfg.layers_for(llm.num_layers)
        self.aggregate = MetaQueryAggregation(llm, cfg.num_queries) if cfg.fusion == "attention" else None
        self.fc1 = nn.Linear(3 * D, D, bias=False)
        self.dec = understanding_layer(llm) if cfg.intermediate else None
        self.fc2 = nn.Linear(2 * D, D, bias=False)
        self.layers = nn.ModuleList(understanding_layer(llm) for _ in range(cfg.num_layers))
        self._fused = FusedStack([*([self.dec] if self.dec is not None else []), *self.layers])

    def fused_layers(self) -> DraftLayers:
        """Dec and the draft layers as ``FusedLayer`` copies for decoding (the same function in fewer kernels),
        rebuilt only when a weight has changed since the last call."""
        fused = self._fused.layers()
        if self.dec is None:
            return DraftLayers(None, fused)
        return DraftLayers(fused[0], fused[1:])

    def zero_init_modules(self) -> dict[str, nn.Linear]:
        """The layers the paper zero-initialises (present in this configuration)."""
        out = {"fc1": self.fc1, "fc2": self.fc2}
        if self.aggregate is not None:
            out["aggregate.o_proj"] = self.aggregate.o_proj
        if self.dec is not None:
            out["dec.self_attn.o_proj"] = self.dec.self_attn.o_proj
            out["dec.mlp.down_proj"] = self.dec.mlp.down_proj
        return out

    def new_caches(self) -> tuple[KVCache, KVCache]:
        """Empty KV caches for Dec and for the draft layers."""
        return KVCache(1), KVCache(len(self.layers))

    def _rope(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        return rope_cos_sin(positions, self.llm.head_dim, self.llm.rope_theta, dtype)

    def features(self, states: Tensor, positions: Tensor, mask: Tensor | Append | None,
                 cache: KVCache | None, layers: DraftLayers | None = None) -> Tensor:
        """Target layer states ``[B, S, L, D]`` → draft input features ``F_in [B, S, D]``; Dec's keys join
        ``cache``. ``layers``: ``fused_layers()`` to decode with (default: the modules)."""
        D = self.llm.hidden_size
        s = states[:, :, list(self.skip)].flatten(-2)  # EAGLE-3's low, mid, high
        if self.aggregate is not None:
            s = self.aggregate(states) + s
        x = self.fc1(s)
        if self.cfg.bypass:
            x = x + s[..., 2 * D:]
        if self.dec is not None:
            cos, sin = self._rope(positions, x.dtype)
            attend = resolve_attention(mask, x.shape[1], keys_after(cache, x.shape[1]), x.device)
            dec = self.dec if layers is None else layers.dec
            x = dec(x, None, cos, sin, attend, cache, 0, True)
        return x

    def forward(
        self,
        feature: Tensor,
        embedding: Tensor,
        positions: Tensor,
        mask: Tensor | Append | None,
        cache: KVCache | None,
        update_cache: bool = True,
        layers: DraftLayers | None = None,
    ) -> Tensor:
        """One draft step over rows: ``feature`` (``F_in`` or the previous output) and the next token's embedding,
        both ``[B, S, D]`` → the draft's output ``[B, S, D]`` before the final norm. ``layers``: as in
        ``features``."""
        u = self.fc2(torch.cat([embedding, feature], dim=-1))
        if self.cfg.bypass:
            u = u + feature
        cos, sin = self._rope(positions, u.dtype)
        attend = resolve_attention(mask, u.shape[1], keys_after(cache, u.shape[1]), u.device)
        for i, layer in enumerate(self.layers if layers is None else layers.layers):
            u = layer(u, None, cos, sin, attend, cache, i, update_cache)
        return u


class TargetHead:
    """The target's token embedding, final norm and LM head, shared with the draft and frozen (not a module: nothing
    here is trained or saved with the draft)."""

    def __init__(self, lm: Qwen2Model, lm_head: nn.Linear):
        self._parts = [lm.embed_tokens, lm.norm, lm_head]

    @classmethod
    def of(cls, model) -> TargetHead:
        """For a ``Bagel``."""
        return cls(model.lm, model.language_model.lm_head)

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings; ids < 0 (image tokens, which have no token id) embed to zero."""
        emb = self._parts[0](ids.clamp_min(0))
        return emb * (ids >= 0).unsqueeze(-1).to(emb.dtype)

    def logits(self, hidden: Tensor) -> Tensor:
        return self._parts[2](self._parts[1](hidden))

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in self._parts:
            for t in part.state_dict().values():
                h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]


@torch.no_grad()
def init_draft(draft: Draft, target: Qwen2Model) -> None:
    """Initialise from the target: draft layer j ← target layer L−N+j; Dec ← the layer that reads ``H[high]``
    (L−2 with the default layers); then zero the zero-init layers. Everything else keeps PyTorch's default init."""
    cfg, L = draft.cfg, draft.llm.num_layers
    if cfg.init_from_target:
        for j, layer in enumerate(draft.layers):
            _copy_layer(layer, target.layers[L - len(draft.layers) + j])
        if draft.dec is not None:
            _copy_layer(draft.dec, target.layers[min(draft.skip[2] + 1, L - 1)])
    if cfg.zero_init:
        for module in draft.zero_init_modules().values():
            nn.init.zeros_(module.weight)


def _copy_layer(dst: MoTDecoderLayer, src: MoTDecoderLayer) -> None:
    source = src.state_dict()
    dst.load_state_dict({k: source[k] for k in dst.state_dict()}, strict=True)


def build_draft(cfg: DraftConfig, target, seed: int = 0) -> Draft:
    """A freshly initialised draft for a ``Bagel`` target (deterministic in ``seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        draft = Draft(cfg, target.cfg.llm)
    init_draft(draft, target.lm)
    return draft.to(target.vae2llm.weight.device)


# ----- checkpoints -----
def _config_json(draft: Draft, head: TargetHead) -> str:
    return json.dumps({"draft": dataclasses.asdict(draft.cfg), "llm": dataclasses.asdict(draft.llm),
                       "target_head": head.fingerprint()}, indent=1)


def save_draft(folder: str | Path, draft: Draft, head: TargetHead) -> Path:
    """``draft.safetensors`` (trainable parameters only; config in the metadata) and ``draft.json``."""
    from hyperbagel.files import atomic_save_tensors, atomic_write_text

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = _config_json(draft, head)
    atomic_save_tensors(draft.state_dict(), folder / DRAFT_FILE, {"config": text, "format": "pt"})
    atomic_write_text(text + "\n", folder / DRAFT_CONFIG)
    return folder


def load_draft(folder: str | Path, target) -> Draft:
    """Load a draft for ``target`` (a ``Bagel``); refuses a draft trained against a different target."""
    from hyperbagel.model.checkpoint import load_state, read_tensors

    folder = Path(folder)
    path = folder / DRAFT_CONFIG
    if not path.is_file():
        raise HyperBagelError(f"not a draft folder: {folder} has no {DRAFT_CONFIG}")
    try:
        meta = json.loads(path.read_text())
        cfg = DraftConfig(**meta["draft"])
        llm = LLMConfig(**meta["llm"])
    except (ValueError, TypeError, KeyError) as err:
        raise HyperBagelError(f"corrupt {path}: {err}") from None
    if llm != target.cfg.llm:
        raise HyperBagelError(f"the draft in {folder} was built for a different language model ({llm})")
    if meta.get("target_head") != TargetHead.of(target).fingerprint():
        raise HyperBagelError(f"the draft in {folder} was trained against a different target (embedding, norm or "
                              "LM head differ)")
    with torch.device("meta"):
        draft = Draft(cfg, llm)
    tensors = read_tensors(folder / DRAFT_FILE, device=target.vae2llm.weight.device)
    load_state(draft, tensors, str(folder / DRAFT_FILE), assign=True)
    return draft.eval()
