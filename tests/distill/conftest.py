"""A ``micro`` teacher folder built without training: random init with a generation branch that differs from the
understanding one (so tests can tell the two apart), a random autoencoder and the Shapes World tokenizer."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import build_model, save_pretrained
from hyperbagel.model.presets import preset
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.recipes.teacher import init_weights
from hyperbagel.world.vocab import all_words


@pytest.fixture(scope="session")
def micro_teacher(tmp_path_factory):
    folder = tmp_path_factory.mktemp("micro-teacher")
    torch.manual_seed(0)
    cfg = preset("micro")
    vae = AutoEncoder(cfg.vae).eval()
    model = build_model(dataclasses.replace(cfg, vae=vae.config))
    g = torch.Generator().manual_seed(0)
    init_weights(model, 0.05, g)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and ("_moe_gen" in name or name.startswith(("llm2vae", "time_embedder"))):
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    save_pretrained(folder, model, vae, {"tokenizer.json": ShapesTokenizer.build(list(all_words())).to_json()})
    return folder
