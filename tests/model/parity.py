"""Shared pieces of the reference-parity tests: the fixture model (loaded once), and the fixtures' contexts.

Every context is built the way the reference's ``interleave_inference`` builds it (bagel.md §3.1): T2I → cond
``[text]``, no-text ``[]``, no-image ``[text]``; editing → cond ``[VAE image @0, ViT image @1, text @2…]``,
no-text ``[VAE, ViT]``, no-image ``[text @0…]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import torch
from fixtures import fixtures_dir, rel_err

from hyperbagel.flow.sampler import Branches
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.bagel_checkpoint import load_autoencoder, load_bagel_weights
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.latents import patchify_latents
from hyperbagel.model.presets import preset
from hyperbagel.model.qwen2_mot import LMOutput
from hyperbagel.model.siglip import vit_position_ids

# The README's tolerances (relative max-abs error).
TOL = 1e-5
LOOP_TOL = 1e-4


@contextmanager
def one_thread() -> Iterator[None]:
    """The fixture model is tiny: intra-op threads only add synchronisation (100× slower on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@lru_cache(maxsize=1)
def ref_model() -> Bagel:
    """``bagel_tiny_ema.safetensors`` in ``preset("ref-tiny")`` (shared by every test: never modify it)."""
    return load_bagel_weights(preset("ref-tiny"), fixtures_dir() / "bagel_tiny_ema.safetensors")


@lru_cache(maxsize=1)
def ref_autoencoder() -> AutoEncoder:
    return load_autoencoder(preset("ref-tiny").vae, fixtures_dir() / "ae_tiny.safetensors")


def check(ours: torch.Tensor, ref: torch.Tensor, tol: float = TOL, what: str = "") -> float:
    """Assert the shapes agree and the relative max-abs error is within ``tol``; return the error."""
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} vs reference {tuple(ref.shape)}"
    err = rel_err(ours, ref)
    assert err <= tol, f"{what}: relative max-abs error {err:.2e} > {tol:.0e}"
    return err


def stack_layers(out: LMOutput) -> torch.Tensor:
    """Every decoder layer's output of batch row 0: ``[layers, S, D]``, the fixtures' ``*_layers`` layout."""
    assert out.layer_states is not None
    return torch.stack(out.layer_states)[:, 0]


def grid_ids(meta_ids: list[int], h: int, w: int, side: int) -> torch.Tensor:
    """The fixture's recorded position ids, after checking they follow the ``row·side + col`` rule."""
    ids = torch.tensor(meta_ids)
    assert torch.equal(ids, vit_position_ids(h, w, side))
    return ids


@torch.no_grad()
def t2i_branches(fwd: Forwarder, prompt_ids: list[int], layer_states: bool = False) -> tuple[Branches, list[LMOutput]]:
    """The three T2I contexts, and the LMOutput of the text prefill (the no-image branch is a copy of it)."""
    cond = Context.empty(fwd.model)
    out = fwd.prefill_text(cond, [prompt_ids], layer_states)
    return Branches(cond=cond, no_text=Context.empty(fwd.model), no_image=cond.copy()), [out]


@torch.no_grad()
def edit_branches(
    fwd: Forwarder, tensors: dict, meta: dict, layer_states: bool = False
) -> tuple[Branches, list[LMOutput]]:
    """The three edit contexts, and the LMOutputs of the prefills in the reference's order (VAE, ViT, text, text)."""
    cfg = fwd.model.cfg
    z = tensors["vae_cond_latent"]  # the reference's posterior sample [1, 16, 2h, 2w]
    h, w = z.shape[2] // cfg.latent_patch_size, z.shape[3] // cfg.latent_patch_size
    vae_ids = grid_ids(meta["vae_cond"]["packed_vae_position_ids"], h, w, cfg.max_latent_size)
    ih, iw = (s // cfg.vit.patch_size for s in tensors["image_uint8"].shape[:2])
    vit_ids = grid_ids(meta["vit_position_ids"], ih, iw, cfg.vit_max_num_patch_per_side)

    cond = Context.empty(fwd.model)
    outs = [fwd.prefill_vae(cond, patchify_latents(z, cfg.latent_patch_size), vae_ids, layer_states),
            fwd.prefill_vit(cond, tensors["vit_pixel_tokens"][None], vit_ids, layer_states)]
    no_text = cond.copy()
    outs.append(fwd.prefill_text(cond, [meta["prompt_ids"]], layer_states))
    no_image = Context.empty(fwd.model)
    outs.append(fwd.prefill_text(no_image, [meta["prompt_ids"]], layer_states))
    return Branches(cond=cond, no_text=no_text, no_image=no_image), outs
