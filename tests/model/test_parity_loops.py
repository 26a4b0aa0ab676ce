"""Sampling-loop parity with the reference BAGEL: 10 Euler steps with guidance, then the VAE decode.

``t2i_loop``: cfg_text 4.0, cfg_img 1.0, interval [0, 1], global renorm. ``edit_loop``: cfg_text 4.0, cfg_img 1.5,
interval [0.4, 1] (the last step, t = 0.27, runs only the conditional branch), text_channel renorm. Both start from
the recorded ``init_noise``; every step's x and v, the final latent and the decoded image are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixtures import load_fixture
from parity import LOOP_TOL, TOL, check, edit_branches, grid_ids, one_thread, ref_autoencoder, ref_model, t2i_branches

from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.flow.sampler import euler, guided_velocity
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.context import Forwarder
from hyperbagel.model.latents import unpatchify_latents
from hyperbagel.model.pixels import to_uint8


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


class Loop:
    """One fixture's loop, run once for the module."""

    def __init__(self, name: str):
        self.tensors, self.meta = load_fixture(name)
        model = ref_model()
        fwd = Forwarder(model)
        cfg, params = model.cfg, self.meta["params"]
        self.h, self.w = (s // cfg.latent_downsample for s in self.meta["output_hw"])
        ids = grid_ids(self.meta["packed_vae_position_ids"], self.h, self.w, cfg.max_latent_size)
        if name == "t2i_loop":
            branches, _ = t2i_branches(fwd, self.meta["prompt_ids"])
        else:
            branches, _ = edit_branches(fwd, self.tensors, self.meta)
        for ctx, key in [(branches.cond, "cond"), (branches.no_text, "no_text"), (branches.no_image, "no_image")]:
            assert ctx.length == self.meta["key_values_lens"][key][0], key
        assert branches.cond.rope.tolist() == self.meta["query_positions"]
        assert branches.no_text.rope.tolist() == self.meta["cfg_text_query_positions"]
        assert branches.no_image.rope.tolist() == self.meta["cfg_img_query_positions"]

        guidance = GuidanceConfig(text_scale=params["cfg_text_scale"], image_scale=params["cfg_img_scale"],
                                  interval=tuple(params["cfg_interval"]), renorm_type=params["cfg_renorm_type"],
                                  renorm_min=params["cfg_renorm_min"])
        self.timesteps = bagel_timesteps(params["num_timesteps"], params["timestep_shift"])
        self.trajectory: list = []
        before = fwd.forwards
        with torch.no_grad():
            self.final = euler(guided_velocity(fwd, branches, ids, guidance), self.tensors["init_noise"][None],
                               self.timesteps, self.trajectory)
            self.latent = unpatchify_latents(self.final, self.h, self.w, cfg.latent_patch_size, cfg.vae.z_channels)
            self.image = ref_autoencoder().decode(self.latent)
        self.forwards = fwd.forwards - before


@pytest.fixture(scope="module", params=["t2i_loop", "edit_loop"])
def loop(request) -> Loop:
    return Loop(request.param)


def test_schedule_and_forward_count(loop):
    assert torch.equal(loop.timesteps[:-1], loop.tensors["step_t"])
    assert len(loop.trajectory) == len(loop.meta["step_t"]) == loop.meta["counts"]["steps"]
    assert loop.forwards == loop.meta["counts"]["llm_forwards_denoise"]
    assert loop.meta["step_v_dtype"] == ["float32"] * len(loop.trajectory)


def test_every_step(loop):
    for i, (t, x, v) in enumerate(loop.trajectory):
        assert float(t) == loop.meta["step_t"][i]
        check(x[0], loop.tensors["step_x_t"][i], LOOP_TOL, what=f"step {i} x_t")
        check(v[0], loop.tensors["step_v_t"][i], LOOP_TOL, what=f"step {i} v_t")


def test_final_latent(loop):
    check(loop.final[0], loop.tensors["final_latent_tokens"], LOOP_TOL, what="final latent tokens")
    check(loop.latent, loop.tensors["decoded_latent_nchw"], LOOP_TOL, what="final latent")


def test_decoded_image(loop):
    # Decoding the reference's own latent is the autoencoder's parity; here the latent is ours.
    check(loop.image, loop.tensors["decoded_image_float"], LOOP_TOL, what="decoded image")
    ours = to_uint8(loop.image[0]).astype(np.int16)
    ref = loop.tensors["decoded_image_uint8"].numpy().astype(np.int16)
    assert np.abs(ours - ref).max() <= 1


def test_first_step_is_exact_velocity_parity(loop):
    # Before errors accumulate, the loop's first step is held to the single-forward tolerance.
    check(loop.trajectory[0][2][0], loop.tensors["step_v_t"][0], TOL, what="step 0 v_t")
