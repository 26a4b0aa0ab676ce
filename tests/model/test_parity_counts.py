"""Forward counts: our sampler makes exactly the reference's language-model forwards per 50-step image.

``forward_counts.json`` counts the reference's ``forward_inference`` calls inside ``generate_image`` for five
settings (T2I and editing, different image scales and CFG intervals). Here the real ``Forwarder`` counts ours, on
the fixture model with a 2×2-token image (the count does not depend on the size).
"""

from __future__ import annotations

import json

import pytest
import torch
from fixtures import fixtures_dir
from parity import one_thread, ref_model

from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.flow.sampler import Branches, euler, guided_velocity
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.siglip import vit_position_ids


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


SCENARIOS = {  # forward_counts.json's scenarios and their documented counts (bagel.md §3.4)
    "t2i_eval_cfg_interval_0_1": 98,
    "edit_cfg_interval_0.4_1_img1.5": 131,
    "t2i_notebook_cfg_interval_0.4_1": 90,
    "t2i_app_default_img1.5_interval_0.4_1": 131,
    "edit_notebook_img2.0_interval_0_1": 147,
}
PROMPT = [256, *b"a red cube", 257]
SIDE = 2  # latent tokens (and ViT patches) per image side


def reference_counts() -> dict[str, dict]:
    return json.loads((fixtures_dir() / "forward_counts.json").read_text())


def branches_for(fwd: Forwarder, edit: bool, gen: torch.Generator) -> Branches:
    """T2I: cond [text], no-text [], no-image [text].

    Edit: cond [VAE, ViT, text], no-text [VAE, ViT], no-image [text] (random VAE latents and ViT patches).
    """
    cfg = fwd.model.cfg
    cond = Context.empty(fwd.model)
    if edit:
        latents = torch.randn(1, SIDE * SIDE, cfg.patch_latent_dim, generator=gen)
        patches = torch.randn(1, SIDE * SIDE, cfg.vit.patch_dim, generator=gen)
        fwd.prefill_vae(cond, latents, vit_position_ids(SIDE, SIDE, cfg.max_latent_size))
        fwd.prefill_vit(cond, patches, vit_position_ids(SIDE, SIDE, cfg.vit_max_num_patch_per_side))
    no_text = cond.copy()
    fwd.prefill_text(cond, [PROMPT])
    no_image = Context.empty(fwd.model)
    fwd.prefill_text(no_image, [PROMPT])
    return Branches(cond=cond, no_text=no_text, no_image=no_image)


def test_reference_counts_are_the_documented_ones():
    assert {name: c["llm_forwards_denoise"] for name, c in reference_counts().items()} == SCENARIOS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_forward_counts(scenario):
    ref = reference_counts()[scenario]
    s = ref["settings"]
    fwd = Forwarder(ref_model())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        branches = branches_for(fwd, scenario.startswith("edit"), gen)
        guidance = GuidanceConfig(text_scale=s["cfg_text_scale"], image_scale=s["cfg_img_scale"],
                                  interval=tuple(s["cfg_interval"]), renorm_type="global")
        timesteps = bagel_timesteps(s["num_timesteps"], s["timestep_shift"])
        before = fwd.forwards
        noise = torch.randn(1, SIDE * SIDE, fwd.model.cfg.patch_latent_dim, generator=gen)
        euler(guided_velocity(fwd, branches, vit_position_ids(SIDE, SIDE, fwd.model.cfg.max_latent_size), guidance),
              noise, timesteps)
    assert fwd.forwards - before == ref["llm_forwards_denoise"]
    assert len(timesteps) - 1 == ref["steps"]
    assert sum(guidance.active(float(t)) for t in timesteps[:-1]) == ref["steps_with_cfg"]
