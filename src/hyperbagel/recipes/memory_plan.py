"""A memory plan per GPU for every training stage, computed from the real modules built on the meta device.

For each stage the recipe's own models are built as the recipe builds them (``Bagel``, ``student_from_teacher``,
``LatentDiscriminator``, ``build_draft``, …) with no memory behind them, and their parameters are counted per model:
in one process a student shares the teacher's understanding weights, but under FSDP2 each sharded model holds its
own shard of them (``recipes/distill_common.distribute``). Every parameter, gradient and optimizer moment of a
sharded model is divided over the GPUs; what is not is per GPU:

- **gathered**: a unit's parameters while it computes (two units in flight: the one running and the next, prefetched);
- **activations**: the tensors autograd saves for backward, counted by running one real decoder layer forward on
  the meta device under ``saved_tensors_hooks`` at the stage's token counts (attention counted as a fused kernel
  saves it: q, k, v, the output and the log-sum-exp — no T × T matrix), times the layers; with activation
  checkpointing each layer keeps only its input, and one layer is recomputed at a time;
- **context caches**: the keys and values of the prefilled contexts that generation stages denoise against.

- **replicated** frozen parts: the VAE, and the draft stage's target embedding and head (the draft trains on stored
  target states, so of the target only these stay, whole on every GPU).

Bytes: trained parameters fp32 (4) + gradients fp32 (4) + AdamW moments (8); frozen models fp32 (4), as the recipes
load them; gathered units in ``param_dtype`` (``ShardingConfig.param_dtype``; bf16 by default here, as the commands
in docs/scale.md set it); activations and caches bf16. 10 % of each GPU is left for the allocator and runtime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from unittest import mock

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.config import BagelConfig, LLMConfig
from hyperbagel.model.presets import preset
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, Routing, rope_cos_sin

STAGES = ("vae", "vit", "teacher", "draft", "reward", "cfg", "tscd", "dmdo", "adp", "refl")
GIB = 2**30
HEADROOM = 0.9


@dataclass
class PlanSettings:
    preset: str = "bagel-7b"
    gpus: int = 8
    gpu_memory_gib: float = 80.0
    batch: int = 1  # samples per GPU per forward
    image_size: int = 1024  # generated image side, px
    context_tokens: int = 256  # text (and other context) tokens per sample
    vit_tokens: int = 1024  # ViT patches of an understanding or editing image
    activation_checkpointing: bool = True
    param_dtype: str = "bfloat16"  # the dtype units are gathered in (``ShardingConfig.param_dtype``)
    layers: int | None = None  # the language model's depth, when not the preset's (a reduced-depth check)

    def model_config(self) -> BagelConfig:
        cfg = preset(self.preset)
        if self.layers is not None:
            cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, num_layers=self.layers))
        return dataclasses.replace(cfg, image_size=self.image_size)


@dataclass
class Role:
    name: str
    module: nn.Module
    with_grad: bool  # its forward keeps a graph for backward during the stage's peak step
    sharded: bool = True  # False: whole on every GPU


@dataclass
class StagePlan:
    stage: str
    trained_params: int
    frozen_params: int
    bytes: dict[str, float] = field(default_factory=dict)  # per GPU
    min_gpus: int | None = None

    @property
    def total(self) -> float:
        return sum(self.bytes.values())


class _FusedAttention(torch.autograd.Function):
    """Stands in for a fused attention kernel during counting: saves what flash attention saves."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        out = torch.empty_like(q)  # k and v keep their own (grouped) heads
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - counting never runs backward
        raise NotImplementedError


def _fused_sdpa(q, k, v, attn_mask=None, enable_gqa=False, **_):
    return _FusedAttention.apply(q, k, v)


def layer_activation_bytes(cfg: LLMConfig, n_und: int, n_gen: int, batch: int = 1) -> int:
    """Bytes that one decoder layer saves for backward on ``batch`` rows of ``n_und`` understanding and ``n_gen``
    generation tokens, in bf16 (parameters excluded: FSDP gathers them again for backward)."""
    T = n_und + n_gen
    with torch.device("meta"):
        layer = MoTDecoderLayer(cfg).to(torch.bfloat16)
        x = torch.empty(batch, T, cfg.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        positions = torch.zeros(batch, T, dtype=torch.long)
        flat = torch.arange(batch * T).view(batch, T)
        routing = Routing(flat[:, :n_und].reshape(-1), flat[:, n_und:].reshape(-1)) if n_gen else None
        if n_gen and not n_und:
            routing = Routing(torch.empty(0, dtype=torch.long), flat.reshape(-1))
    cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, torch.bfloat16)
    params = {id(p) for p in layer.parameters()}
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        if id(t) not in params and not (t._base is not None and id(t._base) in params):
            total += t.numel() * t.element_size()
        return t

    with mock.patch.object(F, "scaled_dot_product_attention", _fused_sdpa), \
            torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, routing, cos, sin, None, None, 0, False)
    return total


def _units(model: nn.Module) -> list[int]:
    """Parameter counts of the FSDP units of ``model`` (its decoder layers, and the root with the rest)."""
    layers = [m for m in model.modules() if isinstance(m, MoTDecoderLayer)]
    inside = {id(p) for layer in layers for p in layer.parameters()}
    root = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    return [sum(p.numel() for p in layer.parameters()) for layer in layers] + [root]


def _roles(stage: str, cfg: BagelConfig) -> list[Role]:
    """The stage's models, built on the meta device as its recipe builds them."""
    from hyperbagel.decode.draft import build_draft
    from hyperbagel.decode.draft_config import DraftConfig
    from hyperbagel.distill.discriminator import LatentDiscriminator, default_layers
    from hyperbagel.distill.pixel_discriminator import PixelDiscriminator
    from hyperbagel.distill.reward import RewardModel, RewardModelConfig
    from hyperbagel.model.autoencoder import AutoEncoder
    from hyperbagel.model.siglip import SiglipVisionTransformer
    from hyperbagel.model.student import student_from_teacher

    def frozen(m: nn.Module) -> nn.Module:
        for p in m.parameters():
            p.requires_grad_(False)
        return m

    with torch.device("meta"):
        if stage == "vae":
            return [Role("vae", AutoEncoder(cfg.vae), True)]
        if stage == "vit":
            return [Role("vit", SiglipVisionTransformer(cfg.vit), True)]
        if stage == "reward":
            return [Role("reward", RewardModel(RewardModelConfig()), True)]
        teacher = Bagel(cfg)
        vae = frozen(AutoEncoder(cfg.vae))
        if stage == "teacher":
            return [Role("teacher", teacher, True), Role("ema", frozen(Bagel(cfg)), False),
                    Role("vae", vae, False, sharded=False)]
        if stage == "draft":
            head = frozen(nn.ModuleList([teacher.lm.embed_tokens, teacher.lm.norm, teacher.language_model.lm_head]))
            return [Role("target head", head, False, sharded=False),
                    Role("draft", build_draft(DraftConfig(), teacher), True)]
        frozen(teacher)
        student = student_from_teacher(teacher)
        roles = [Role("teacher", teacher, False), Role("vae", vae, False, sharded=False)]
        layers = default_layers(cfg.llm.num_layers)  # the recipes' default
        if stage == "cfg":
            return [*roles, Role("student", student, True)]
        if stage == "tscd":
            disc = LatentDiscriminator(student_from_teacher(teacher), layers)
            return [*roles, Role("student", student, True), Role("discriminator", disc, True)]
        if stage == "dmdo":
            return [*roles, Role("generator", student, True), Role("fake", student_from_teacher(teacher), False)]
        if stage == "adp":
            disc = LatentDiscriminator(student_from_teacher(teacher), layers)
            return [Role("teacher", frozen(student_from_teacher(teacher)), False),
                    Role("vae", vae, False, sharded=False), Role("generator", student, True),
                    Role("discriminator", disc, True), Role("pixel_discriminator", PixelDiscriminator(), True)]
        if stage == "refl":
            return [*roles, Role("generator", student, True), Role("reward", frozen(RewardModel(RewardModelConfig())),
                                                                   False)]
    raise ValueError(f"unknown stage {stage!r}; stages are {STAGES}")


def plan_stage(stage: str, s: PlanSettings) -> StagePlan:
    cfg = s.model_config()
    roles = _roles(stage, cfg)
    # per model: a parameter two models share in one process is a shard of each under FSDP2
    trained = sum(p.numel() for r in roles for p in r.module.parameters() if p.requires_grad)
    frozen = {sharded: sum(p.numel() for r in roles if r.sharded == sharded for p in r.module.parameters()
                           if not p.requires_grad) for sharded in (True, False)}
    bagels = [r.module for r in roles if any(isinstance(m, MoTDecoderLayer) for m in r.module.modules())]
    units = [n for m in bagels for n in _units(m)] or [max(p.numel() for r in roles for p in r.module.parameters())]
    gathered_bytes = 2 if s.param_dtype == "bfloat16" else 4

    llm, B = cfg.llm, s.batch
    n_gen = (s.image_size // cfg.latent_downsample) ** 2 + 2
    graphs = [r for r in roles if r.with_grad and any(isinstance(m, MoTDecoderLayer) for m in r.module.modules())]
    if stage == "teacher":  # every task group trains the whole sequence: text, ViT and VAE tokens
        n_und = s.context_tokens + s.vit_tokens
    elif stage == "draft":  # the target runs without a graph; the draft's two layers are small
        n_und, n_gen, graphs = s.context_tokens + s.vit_tokens, 0, []
    else:  # a denoising forward: the latent tokens against a cached context
        n_und = 0
    per_layer = layer_activation_bytes(llm, n_und, n_gen, B) if graphs else 0
    tokens = n_und + n_gen
    layers = llm.num_layers
    if s.activation_checkpointing:
        one_graph = layers * B * tokens * llm.hidden_size * 2 + per_layer
    else:
        one_graph = layers * per_layer
    activations = len(graphs) * one_graph
    if stage in ("teacher", "draft"):  # the language-model head's logits over the text tokens (fp32, and grad)
        activations += 2 * B * s.context_tokens * llm.vocab_size * 4
    kv = 0
    if stage in ("cfg", "tscd", "dmdo", "adp", "refl"):  # editing's three branch contexts (ViT + VAE + text)
        ctx = s.vit_tokens + n_gen + s.context_tokens
        kv = 3 * B * layers * 2 * ctx * llm.num_kv_heads * llm.head_dim * 2

    plan = StagePlan(stage, trained, frozen[True] + frozen[False])
    fixed = {"gathered": 2 * max(units) * gathered_bytes, "activations": activations, "context caches": kv}
    for n in range(1, 4097):
        sharded = {"trained params": trained * 4 / n, "gradients": trained * 4 / n, "optimizer": trained * 8 / n,
                   "frozen params": frozen[True] * 4 / n + frozen[False] * 4}
        if n == s.gpus:
            plan.bytes = {**sharded, **fixed}
        if plan.min_gpus is None and sum(sharded.values()) + sum(fixed.values()) <= HEADROOM * s.gpu_memory_gib * GIB:
            plan.min_gpus = n
        if plan.bytes and plan.min_gpus is not None:
            break
    return plan


def plan_table(stages: list[str], s: PlanSettings) -> str:
    """The plans as a Markdown table (GiB per GPU at ``s.gpus`` GPUs)."""
    plans = [plan_stage(stage, s) for stage in stages]
    keys = ["trained params", "gradients", "optimizer", "frozen params", "gathered", "activations", "context caches"]
    head = ["stage", "trained / frozen params (B)", *keys, f"total per GPU (of {s.gpu_memory_gib:g})", "min GPUs"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in plans:
        cells = [p.stage, f"{p.trained_params / 1e9:.3f} / {p.frozen_params / 1e9:.3f}",
                 *(f"{p.bytes[k] / GIB:.1f}" for k in keys), f"{p.total / GIB:.1f}",
                 str(p.min_gpus) if p.min_gpus else "> 4096"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def settings_line(s: PlanSettings) -> str:
    d = dataclasses.asdict(s)
    return ", ".join(f"{k}={v}" for k, v in d.items())


