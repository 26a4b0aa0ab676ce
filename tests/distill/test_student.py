"""Students: shared understanding weights, zero-init guidance embedders, save/load, and the accelerated Pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.student import (
    StudentInfo,
    generation_params,
    is_generation_param,
    load_student,
    save_student,
    student_from_teacher,
)
from hyperbagel.pipeline import Pipeline
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene


def test_generation_branch_names():
    gen = ["language_model.model.layers.0.mlp_moe_gen.up_proj.weight", "language_model.model.norm_moe_gen.weight",
           "time_embedder.mlp.0.weight", "vae2llm.bias", "llm2vae.weight", "latent_pos_embed.pos_embed",
           "text_scale_embedder.mlp.2.weight", "image_scale_embedder.mlp.0.bias"]
    und = ["language_model.model.layers.0.mlp.up_proj.weight", "language_model.model.norm.weight",
           "language_model.lm_head.weight", "language_model.model.embed_tokens.weight", "vit_model.x",
           "connector.fc1.weight", "vit_pos_embed.pos_embed"]
    assert all(is_generation_param(n) for n in gen)
    assert not any(is_generation_param(n) for n in und)


def test_student_shares_understanding_and_starts_as_the_teacher(micro_teacher):
    teacher, _ = load_pretrained(micro_teacher)
    student = student_from_teacher(teacher)
    mine, theirs = dict(student.named_parameters()), dict(teacher.named_parameters())
    for name, p in mine.items():
        if "scale_embedder" in name:
            continue
        assert (p is theirs[name]) != is_generation_param(name), name
        assert torch.equal(p, theirs[name]), name
    assert all(is_generation_param(n) for n, p in mine.items() if p.requires_grad)
    assert {id(p) for p in generation_params(student)} == {id(p) for n, p in mine.items() if p.requires_grad}
    # zero-init embedders: the student's velocity at any scale is the teacher's conditional velocity
    fwd_t, fwd_s = Forwarder(teacher), Forwarder(student)
    ctx = Context.empty(teacher, 2)
    fwd_t.prefill_text(ctx, [[0, 5, 6, 1], [0, 7, 1]])
    x, t, ids = torch.randn(2, 16, 16), torch.tensor([0.9, 0.3]), torch.arange(16)
    with torch.no_grad():
        v_t, _ = fwd_t.velocity(ctx, x, t, ids)
        v_s, _ = fwd_s.velocity(ctx, x, t, ids, text_scale=torch.tensor([4.0, 2.0]), image_scale=torch.ones(2))
        with pytest.raises(ValueError, match="guidance embedders"):
            fwd_t.velocity(ctx, x, t, ids, text_scale=torch.ones(2))
    assert torch.equal(v_t, v_s)


def test_save_load_roundtrip_and_understanding_bit_identical(micro_teacher, tmp_path):
    teacher, _ = load_pretrained(micro_teacher)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = student_from_teacher(teacher)
    with torch.no_grad():
        for p in generation_params(student):
            p.add_(0.01)
    info = StudentInfo(stage="dmdo", lineage={"dmdo": str(tmp_path)})
    save_student(tmp_path / "s", student, info, micro_teacher)
    teacher2, _ = load_pretrained(tmp_path / "s")
    for k, v in teacher2.state_dict().items():
        assert torch.equal(v, before[k]), k
    loaded, info2 = load_student(tmp_path / "s", teacher2)
    assert info2 == info
    for (k, a), (_, b) in zip(student.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_pipeline_samples_with_the_student_by_default(micro_teacher, tmp_path):
    teacher, _ = load_pretrained(micro_teacher)
    save_student(tmp_path / "s", student_from_teacher(teacher), StudentInfo(), micro_teacher)
    pipe = Pipeline.from_pretrained(tmp_path / "s")
    assert pipe.student is not None
    gen = pipe.generate(["a red circle", "two squares"], [0, 1])
    assert gen.forwards == 6  # one forward per step; the prompt's prefill runs inside the first
    image = render(sample_scene(np.random.default_rng(0)))
    ed = pipe.edit([image, image], ["make the background gray", "remove the circle"], [0, 1])
    assert ed.forwards == 1 + 6  # the VAE and ViT blocks, then one forward per step, the instruction inside the first
    base = pipe.generate(["a red circle"], [0], accelerated=False)
    assert base.forwards == 49 * 2
    # a student equal to the teacher at guidance 1.0 gives the teacher's unguided images
    from hyperbagel.flow.guidance import GuidanceConfig
    from hyperbagel.pipeline import SamplerSettings

    s = SamplerSettings(7, 3.0)
    g1 = GuidanceConfig(text_scale=1.0)
    a = pipe.generate(["a red circle"], [3], g1, s)
    b = pipe.generate(["a red circle"], [3], g1, s, accelerated=False)
    assert np.array_equal(a.images[0], b.images[0])
    plain = Pipeline.from_pretrained(micro_teacher)
    assert plain.student is None
    with pytest.raises(HyperBagelError, match="no distilled student"):
        plain.generate("a red circle", accelerated=True)


def test_a_gated_student_is_fed_scale_one_outside_the_cfg_interval(micro_teacher, tmp_path):
    teacher, _ = load_pretrained(micro_teacher)
    student = student_from_teacher(teacher)
    torch.manual_seed(0)
    with torch.no_grad():  # guidance embedders that are no longer zero: the scales now change the velocity
        for name, p in student.named_parameters():
            if "scale_embedder" in name:
                p.normal_(0.0, 0.5)
    save_student(tmp_path / "gated", student, StudentInfo(gated=True), micro_teacher)
    save_student(tmp_path / "plain", student, StudentInfo(), micro_teacher)
    gated, plain = Pipeline.from_pretrained(tmp_path / "gated"), Pipeline.from_pretrained(tmp_path / "plain")
    assert gated.student_info.gated and not plain.student_info.gated

    # the sampler's velocity: the scales given inside (0.4, 1], scale 1 outside
    from hyperbagel.flow.sampler import distilled_velocity

    branches, _ = gated.generation_branches(["a red circle"])
    ids, fwd = gated.latent_ids(), gated.student_fwd
    x = torch.randn(1, len(ids), gated.cfg.patch_latent_dim, generator=torch.Generator().manual_seed(1))
    v = distilled_velocity(fwd, branches.cond, ids, 4.0, 1.5, (0.4, 1.0))

    def at(t, text, image):
        return fwd.velocity(branches.cond, x, torch.tensor([t]), ids, text_scale=torch.tensor([text]),
                            image_scale=torch.tensor([image]))[0]

    assert torch.equal(v(x, torch.tensor(0.3)), at(0.3, 1.0, 1.0))
    assert torch.equal(v(x, torch.tensor(0.5)), at(0.5, 4.0, 1.5))
    assert not torch.equal(at(0.3, 4.0, 1.5), at(0.3, 1.0, 1.0))

    # text-to-image guides on all of [0, 1]: the gate changes nothing; editing's last step (t = 0.375) is gated
    generated = [p.generate(["a red circle"], [0]).images[0] for p in (gated, plain)]
    assert np.array_equal(*generated)
    image = render(sample_scene(np.random.default_rng(0)))
    edited = [p.edit([image], ["remove the circle"], [0]).images[0] for p in (gated, plain)]
    assert not np.array_equal(*edited)

    # students written before the gate existed read as ungated
    old = {k: v for k, v in json.loads(StudentInfo(gated=True).to_json()).items() if k != "gated"}
    assert StudentInfo.from_json(json.dumps(old)).gated is False
