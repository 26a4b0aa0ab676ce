"""A ``micro`` model with small random weights (N(0, 0.05)), the same on every call: for tests of what the model
computes rather than what it has learned."""

import torch

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.presets import preset


def random_micro_model() -> Bagel:
    torch.manual_seed(0)
    model = build_model(preset("micro")).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return model
