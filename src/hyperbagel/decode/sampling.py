"""Token distributions: greedy, temperature and nucleus (top-p), as pure functions shared by every decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingConfig:
    """``temperature == 0`` means greedy (argmax)."""

    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"SamplingConfig.temperature must be ≥ 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingConfig.top_p must be in (0, 1], got {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probabilities(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """The distribution a sampler draws from: softmax(logits / T), restricted to the top-p nucleus and renormalised.

    Greedy is the one-hot distribution of the argmax, so lossless rules written for sampling cover it too.
    """
    if cfg.greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    probs = torch.softmax(logits.float() / cfg.temperature, dim=-1)
    if cfg.top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # keep the smallest prefix whose mass reaches top_p (the first token always stays)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of ``probs [..., V]``, made on the generator's device (a seeded CPU generator with a model
    on the GPU: the same seed draws the same tokens on both)."""
    flat = probs.reshape(-1, probs.shape[-1])
    device = flat.device if generator is None else generator.device
    return torch.multinomial(flat.to(device), 1, generator=generator).to(probs.device).view(probs.shape[:-1])


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Uniform draws in [0, 1) of ``like``'s dtype on its device, made on the generator's device (as ``sample``)."""
    device = like.device if generator is None else generator.device
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=device).to(like.device)


def next_token(logits: Tensor, cfg: SamplingConfig, generator: torch.Generator | None) -> Tensor:
    if cfg.greedy:
        return logits.argmax(-1)
    return sample(probabilities(logits, cfg), generator)
