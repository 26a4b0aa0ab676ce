"""The memory plan counts what the real modules hold and save, not estimates."""

import torch

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.presets import preset
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, Routing, rope_cos_sin
from hyperbagel.model.student import student_from_teacher
from hyperbagel.recipes.memory_plan import PlanSettings, layer_activation_bytes, plan_stage


def _saved_bytes_of_a_real_forward(cfg, n_und, n_gen):
    torch.manual_seed(0)
    layer = MoTDecoderLayer(cfg).to(torch.bfloat16)
    T = n_und + n_gen
    x = torch.randn(1, T, cfg.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    cos, sin = rope_cos_sin(torch.zeros(1, T, dtype=torch.long), cfg.head_dim, cfg.rope_theta, torch.bfloat16)
    routing = Routing(torch.arange(n_und), torch.arange(n_und, T))
    params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    total = 0

    def pack(t):
        nonlocal total
        if t.untyped_storage().data_ptr() not in params:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, routing, cos, sin, None, None, 0, False)  # no mask: the CPU flash-attention kernel
    return total


def test_counted_activations_match_a_real_cpu_forward_with_the_fused_kernel():
    cfg = preset("micro").llm
    real = _saved_bytes_of_a_real_forward(cfg, 5, 16)
    counted = layer_activation_bytes(cfg, 5, 16)
    assert counted == real


def test_teacher_stage_counts_every_parameter_once_and_shards_them():
    s = PlanSettings(preset="micro", gpus=2, gpu_memory_gib=1.0, image_size=64, context_tokens=8, vit_tokens=16)
    plan = plan_stage("teacher", s)
    with torch.device("meta"):
        n = sum(p.numel() for p in Bagel(preset("micro")).parameters())
    fixed_tables = sum(p.numel() for name, p in Bagel(preset("micro")).named_parameters() if "pos_embed" in name)
    assert plan.trained_params == n - fixed_tables or plan.trained_params == n
    assert plan.bytes["optimizer"] == plan.trained_params * 8 / 2
    assert plan.min_gpus == 1


def test_each_sharded_student_holds_its_own_shard_of_the_understanding_weights():
    s = PlanSettings(preset="micro", image_size=64, context_tokens=8, vit_tokens=16)
    cfg_stage, dmdo = plan_stage("cfg", s), plan_stage("dmdo", s)
    with torch.device("meta"):
        student = student_from_teacher(Bagel(preset("micro")))
    frozen = sum(p.numel() for p in student.parameters() if not p.requires_grad)  # understanding + fixed table
    assert dmdo.frozen_params == cfg_stage.frozen_params + frozen  # the fake model's copy, as FSDP2 holds it
    assert dmdo.trained_params == 2 * cfg_stage.trained_params  # generator and fake: two generation branches


def test_the_draft_keeps_only_the_targets_embedding_and_head_whole_on_every_gpu():
    s = PlanSettings(preset="micro", gpus=2, image_size=64, context_tokens=8, vit_tokens=16)
    plan = plan_stage("draft", s)
    llm = preset("micro").llm
    head = 2 * llm.vocab_size * llm.hidden_size + llm.hidden_size  # embedding, LM head, final norm
    assert plan.frozen_params == head
    assert plan.bytes["frozen params"] == head * 4  # replicated, fp32
