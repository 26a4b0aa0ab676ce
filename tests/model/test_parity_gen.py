"""Generation parity with the reference BAGEL: conditioning prefills, per-branch velocities and guided velocities.

Fixtures ``gen_velocity_t2i`` (cond ``[text]``, no-text ``[]``, no-image ``[text]``; cfg_img 1.0) and
``gen_velocity_edit`` (cond ``[VAE, ViT, text]``, no-text ``[VAE, ViT]``, no-image ``[text]``; cfg_img 1.5), each
at five shifted timesteps for a fixed ``x_t``, with the three renorm variants (cfg_text 4.0, renorm_min 0).
"""

from __future__ import annotations

import pytest
import torch
from fixtures import load_fixture
from parity import check, edit_branches, grid_ids, one_thread, ref_model, stack_layers, t2i_branches

from hyperbagel.flow.guidance import RENORM_TYPES, GuidanceConfig
from hyperbagel.flow.sampler import Branches, guided_velocity
from hyperbagel.model.context import Forwarder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


NAMES = ["gen_velocity_t2i", "gen_velocity_edit"]
STEPS = range(5)


class Case:
    """One fixture's branch contexts, prefilled once for the module."""

    def __init__(self, name: str):
        self.tensors, self.meta = load_fixture(name)
        self.fwd = Forwarder(ref_model())
        cfg = self.fwd.model.cfg
        h, w = self.meta["latent_tokens_hw"]
        self.ids = grid_ids(self.meta["layout"]["query_block"]["packed_vae_position_ids"], h, w, cfg.max_latent_size)
        if name == "gen_velocity_t2i":
            self.branches, prefills = t2i_branches(self.fwd, self.meta["prompt_ids"], layer_states=True)
            self.prefills = prefills * 2  # the reference prefills the same text twice (cond, no-image)
        else:
            self.branches, self.prefills = edit_branches(self.fwd, self.tensors, self.meta, layer_states=True)

    @property
    def x(self) -> torch.Tensor:
        return self.tensors["x_t"][None]

    def t(self, i: int) -> torch.Tensor:
        t = self.tensors["timesteps"][i]
        assert t.item() == pytest.approx(self.meta["timesteps"][i])
        return t[None]


@pytest.fixture(scope="module", params=NAMES)
def case(request) -> Case:
    return Case(request.param)


def branch_contexts(branches: Branches) -> dict:
    return {"cond": branches.cond, "no_text": branches.no_text, "no_image": branches.no_image}


def test_branch_layout(case):
    for name, ctx in branch_contexts(case.branches).items():
        layout = case.meta["layout"][name]
        assert ctx.length == layout["kv_lens"][0], name
        assert ctx.rope.tolist() == layout["ropes"] == layout["positions"], name


def test_prefills(case):
    for i, (out, record) in enumerate(zip(case.prefills, case.meta["prefills"])):
        what = f"prefill{i} ({record['phase']})"
        key = f"prefill{i}_{record['phase']}"
        check(stack_layers(out), case.tensors[f"{key}_layers"], what=what + " layers")
        check(out.hidden[0], case.tensors[f"{key}_hidden"], what=what + " hidden")


@pytest.mark.parametrize("step", STEPS)
def test_query_block_input(case, step):
    model = case.fwd.model
    markers = model.embed_text(torch.tensor(case.meta["layout"]["query_block"]["packed_text_ids"]))
    with torch.no_grad():
        latents = model.embed_latents(case.x, case.t(step), case.ids)[0]
    check(torch.cat([markers[:1], latents, markers[1:]]), case.tensors["v_cond_llm_input"][step], what="input")


@pytest.mark.parametrize("step", STEPS)
def test_branch_velocities(case, step):
    with torch.no_grad():
        for name, ctx in branch_contexts(case.branches).items():
            length = ctx.length
            v, out = case.fwd.velocity(ctx, case.x, case.t(step), case.ids, layer_states=True)
            assert ctx.length == length  # the noised block never enters the cache
            check(v[0], case.tensors[f"v_{name}"][step], what=f"v_{name}")
            if name == "cond":
                check(stack_layers(out), case.tensors["v_cond_llm_layers"][step], what="cond layers")
                check(out.hidden[0], case.tensors["v_cond_llm_hidden"][step], what="cond hidden")


@pytest.mark.parametrize("renorm", RENORM_TYPES)
@pytest.mark.parametrize("step", STEPS)
def test_guided_velocity(case, step, renorm):
    guidance = GuidanceConfig(text_scale=case.meta["cfg_text_scale"], image_scale=case.meta["cfg_img_scale"],
                              interval=(0.0, 1.0), renorm_type=renorm, renorm_min=case.meta["cfg_renorm_min"])
    velocity = guided_velocity(case.fwd, case.branches, case.ids, guidance)
    before = case.fwd.forwards
    with torch.no_grad():
        v = velocity(case.x, case.t(step)[0])
    assert case.fwd.forwards - before == (3 if guidance.image_scale > 1 else 2)
    check(v[0], case.tensors[f"v_cfg_{renorm}"][step], what=f"v_cfg_{renorm}")
