"""The unified model: MoT language model + SigLIP ViT + connector + generation heads, under BAGEL's key names.

The module holds parameters and per-block embedding functions only; the FLUX autoencoder lives in its own file
and module (as ``ae.safetensors`` does), and every loop (decoding, sampling, training) lives elsewhere.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hyperbagel.model.config import BagelConfig
from hyperbagel.model.embeddings import MLPConnector, PositionEmbedding, TimestepEmbedder
from hyperbagel.model.qwen2_mot import Qwen2ForCausalLM
from hyperbagel.model.siglip import SiglipVisionModel


def guidance_embedder(dim: int) -> TimestepEmbedder:
    """A guidance-scale embedder: the timestep embedder's architecture with its last Linear zero-initialised, so a
    student starts as the model it is copied from."""
    emb = TimestepEmbedder(dim)
    if emb.mlp[2].weight.device.type != "meta":
        nn.init.zeros_(emb.mlp[2].weight)
        nn.init.zeros_(emb.mlp[2].bias)
    return emb


class Bagel(nn.Module):
    def __init__(self, cfg: BagelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.llm.hidden_size
        self.language_model = Qwen2ForCausalLM(cfg.llm)
        self.vit_model = SiglipVisionModel(cfg.vit)
        self.connector = MLPConnector(cfg.vit.hidden_size, d)
        self.vit_pos_embed = PositionEmbedding(cfg.vit_max_num_patch_per_side, d)
        self.time_embedder = TimestepEmbedder(d)
        self.vae2llm = nn.Linear(cfg.patch_latent_dim, d)
        self.llm2vae = nn.Linear(d, cfg.patch_latent_dim)
        self.latent_pos_embed = PositionEmbedding(cfg.max_latent_size, d)
        if cfg.guidance_embedders:  # CFG-distilled students (Hyper-Bagel §3.2.1): built and injected like t
            self.text_scale_embedder = guidance_embedder(d)
            self.image_scale_embedder = guidance_embedder(d)

    @property
    def lm(self):
        return self.language_model.model

    def embed_text(self, ids: Tensor) -> Tensor:
        return self.language_model.model.embed_tokens(ids)

    def embed_vit(self, pixel_tokens: Tensor, position_ids: Tensor, seq_lens: list[int]) -> Tensor:
        """Packed ViT patches ``[N, 3·p²]`` of several images → LLM tokens ``[N, D]``."""
        feats = self.vit_model(pixel_tokens, position_ids, seq_lens)
        return self.connector(feats) + self.vit_pos_embed(position_ids)

    def embed_latents(
        self,
        x: Tensor,
        t: Tensor,
        position_ids: Tensor,
        text_scale: Tensor | None = None,
        image_scale: Tensor | None = None,
    ) -> Tensor:
        """Latent tokens ``x [B, N, P]`` at times ``t [B]`` (0 = clean) → ``[B, N, D]``.

        A model with guidance embedders also adds the embeddings of the guidance scales ``[B]`` (1.0 when not
        given: no guidance); a model without them rejects scales rather than ignore them.
        """
        cond = self.time_embedder(t)
        if self.cfg.guidance_embedders:
            one = torch.ones_like(t, dtype=torch.float32)
            cond = cond + self.text_scale_embedder(one if text_scale is None else text_scale)
            cond = cond + self.image_scale_embedder(one if image_scale is None else image_scale)
        elif text_scale is not None or image_scale is not None:
            raise ValueError("this model has no guidance embedders; guidance scales need a CFG-distilled student")
        return self.vae2llm(x) + cond[:, None, :] + self.latent_pos_embed(position_ids)

    def logits(self, hidden: Tensor) -> Tensor:
        return self.language_model.lm_head(hidden)

    def velocity(self, hidden: Tensor) -> Tensor:
        return self.llm2vae(hidden)
