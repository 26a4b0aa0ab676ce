"""Training sequences: a sample is a list of blocks (text, ViT image, clean or noised VAE image), packed into a
padded batch with BAGEL's RoPE positions, expert routing and block attention masks.

Rules (bagel.md §1.8–1.9, §4): a text block ``<|im_start|> ids <|im_end|>`` takes consecutive positions; an image
block (markers included) shares one position and advances the counter by one, except a noised VAE block, which
does not (a clean copy after it would share its position). A text block with ``loss`` is trained on next-token
prediction of ``ids + <|im_end|>``; a noised VAE block on the flow-matching velocity ``ε − x_0``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor

from hyperbagel.flow.schedule import noisy, sample_train_times, velocity_target
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.config import BagelConfig
from hyperbagel.model.latents import patchify_latents
from hyperbagel.model.masks import CAUSAL, FULL, NOISE, Packed
from hyperbagel.model.siglip import patchify_image, vit_position_ids

IGNORE = -100


@dataclass
class Text:
    ids: list[int]  # word ids, without the special tokens
    loss: bool = False


@dataclass
class VitImage:
    pixels: Tensor  # [3, H, W] in [-1, 1]


@dataclass
class VaeImage:
    pixels: Tensor  # [3, H, W] in [-1, 1]
    noised: bool = False


Block = Text | VitImage | VaeImage


@dataclass
class Batch:
    text_ids: Tensor  # [B, S]: token ids where text sits (markers included), 0 elsewhere
    positions: Tensor  # [B, S]
    gen: Tensor  # [B, S] bool: generation-expert tokens
    mask: Packed  # the attention layout: each token's block and its mode
    labels: Tensor  # [B, S]: next-token target at each position, IGNORE elsewhere
    vit_pixels: Tensor | None  # [N_vit, n, 3·p²]
    vit_ids: Tensor | None  # [n]
    vit_index: Tensor | None  # [N_vit·n] flat indices into B·S
    vae_x: Tensor | None  # [N_vae, n, P]: clean latents, or x_t for noised blocks
    vae_t: Tensor | None  # [N_vae]
    vae_ids: Tensor | None  # [n]
    vae_index: Tensor | None  # [N_vae·n]
    target_v: Tensor | None  # [N_noised, n, P]
    noised: Tensor | None  # [N_vae] bool: which VAE blocks carry the MSE loss
    # what ``encode_latents`` turns into vae_x / target_v: the VAE images and each one's random draws
    vae_pixels: Tensor | None = None  # [N_vae, 3, H, W]
    vae_eps: Tensor | None = None  # [N_vae, C, h, w]: the posterior sample's noise
    vae_noise: Tensor | None = None  # [N_vae, n, P]: the flow-matching noise

    def to(self, device: torch.device | str) -> Batch:
        """The same batch with every tensor on ``device`` (``layout`` always runs on the CPU)."""
        return Batch(*(None if v is None else v.to(device) for v in (getattr(self, f.name) for f in fields(self))))


def pack(
    samples: list[list[Block]],
    cfg: BagelConfig,
    vae: AutoEncoder,
    generators: list[torch.Generator],
    timestep_shift: float = 1.0,
) -> Batch:
    """Lay out ``samples`` as one padded batch with its latents (``layout``, then ``encode_latents``)."""
    return encode_latents(layout(samples, cfg, generators, timestep_shift), vae, cfg.latent_patch_size)


def layout(
    samples: list[list[Block]],
    cfg: BagelConfig,
    generators: list[torch.Generator],
    timestep_shift: float = 1.0,
) -> Batch:
    """Lay out ``samples`` as one padded batch, with VAE images still as pixels. Each sample's random draws (VAE
    posterior sample, timestep, noise, in that order per image) come from its own generator, so a sample's tensors
    do not depend on its batch-mates or on how a global batch is split over processes. Runs on the CPU (data-loading
    workers call it); ``encode_latents`` does the VAE's part wherever the VAE lives."""
    tok = cfg.special_tokens
    p_vit, side_vit = cfg.vit.patch_size, cfg.vit_max_num_patch_per_side
    f_lat, side_lat = cfg.latent_downsample, cfg.max_latent_size
    rows = []
    vit_imgs, vae_imgs, vae_noised, vae_gens = [], [], [], []
    for sample in samples:
        ids, pos, gen, bid, mode, labels, vit_at, vae_at = [], [], [], [], [], [], [], []
        rope = 0
        for b, block in enumerate(sample):
            if isinstance(block, Text):
                seq = [tok.bos, *block.ids, tok.eos]
                lab = [*block.ids, tok.eos, IGNORE] if block.loss else [IGNORE] * len(seq)
                ids += seq
                pos += range(rope, rope + len(seq))
                rope += len(seq)
                gen += [False] * len(seq)
                bid += [b] * len(seq)
                mode += [CAUSAL] * len(seq)
                labels += lab
                continue
            H, W = block.pixels.shape[1:]
            is_vit = isinstance(block, VitImage)
            h, w = (H // p_vit, W // p_vit) if is_vit else (H // f_lat, W // f_lat)
            n = h * w
            start = len(ids)
            ids += [tok.start_of_image] + [0] * n + [tok.end_of_image]
            pos += [rope] * (n + 2)
            noised = not is_vit and block.noised
            rope += 0 if noised else 1
            gen += [False] + [not is_vit] * n + [False]
            bid += [b] * (n + 2)
            mode += [NOISE if noised else FULL] * (n + 2)
            labels += [IGNORE] * (n + 2)
            (vit_at if is_vit else vae_at).append((start + 1, n, h, w))
            if is_vit:
                vit_imgs.append((block.pixels, h, w))
            else:
                vae_imgs.append((block.pixels, h, w))
                vae_noised.append(noised)
                vae_gens.append(generators[len(rows)])
        rows.append((ids, pos, gen, bid, mode, labels, vit_at, vae_at))

    B, S = len(rows), max(len(r[0]) for r in rows)
    text_ids = torch.zeros(B, S, dtype=torch.long)
    positions = torch.zeros(B, S, dtype=torch.long)
    gen = torch.zeros(B, S, dtype=torch.bool)
    labels = torch.full((B, S), IGNORE, dtype=torch.long)
    block_ids = torch.full((B, S), -1, dtype=torch.long)
    modes = torch.full((B, S), CAUSAL, dtype=torch.long)
    vit_index, vae_index = [], []
    for r, (ids, pos, g, bid, mode, lab, vit_at, vae_at) in enumerate(rows):
        L = len(ids)
        text_ids[r, :L] = torch.tensor(ids)
        positions[r, :L] = torch.tensor(pos)
        gen[r, :L] = torch.tensor(g)
        labels[r, :L] = torch.tensor(lab)
        block_ids[r, :L], modes[r, :L] = torch.tensor(bid), torch.tensor(mode)
        vit_index += [r * S + s + i for s, n, _, _ in vit_at for i in range(n)]
        vae_index += [r * S + s + i for s, n, _, _ in vae_at for i in range(n)]

    batch = Batch(text_ids, positions, gen, Packed(block_ids, modes), labels, *([None] * 9))
    if vit_imgs:
        _, h, w = vit_imgs[0]
        if any((hh, ww) != (h, w) for _, hh, ww in vit_imgs):
            raise ValueError("all ViT images of a batch must have the same size")
        batch.vit_pixels = torch.stack([patchify_image(px, p_vit) for px, _, _ in vit_imgs])
        batch.vit_ids = vit_position_ids(h, w, side_vit)
        batch.vit_index = torch.tensor(vit_index)
    if vae_imgs:
        _, h, w = vae_imgs[0]
        if any((hh, ww) != (h, w) for _, hh, ww in vae_imgs):
            raise ValueError("all VAE images of a batch must have the same size")
        f = cfg.vae.downsample_factor
        H, W = vae_imgs[0][0].shape[1:]
        latent_shape = (cfg.vae.z_channels, H // f, W // f)
        batch.vae_pixels = torch.stack([px for px, _, _ in vae_imgs])
        batch.vae_eps = torch.stack([torch.randn(latent_shape, generator=g) for g in vae_gens])
        t = torch.cat([sample_train_times(1, timestep_shift, g) for g in vae_gens])
        batch.vae_noise = torch.stack([torch.randn((h * w, cfg.patch_latent_dim), generator=g) for g in vae_gens])
        noised = torch.tensor(vae_noised)
        batch.vae_t = torch.where(noised, t, torch.zeros_like(t))
        batch.vae_ids = vit_position_ids(h, w, side_lat)
        batch.vae_index = torch.tensor(vae_index)
        batch.noised = noised
    return batch


def encode_latents(batch: Batch, vae: AutoEncoder, latent_patch_size: int) -> Batch:
    """Fill in a laid-out batch's latents from its VAE pixels and random draws, on the VAE's device: clean latents,
    or ``x_t`` for noised blocks, and the velocity targets ``ε − x_0``."""
    if batch.vae_pixels is None:
        return batch
    with torch.no_grad():
        mean, logvar = vae.posterior(batch.vae_pixels)
        x0 = patchify_latents(vae.scale(mean + torch.exp(0.5 * logvar) * batch.vae_eps), latent_patch_size)
    t, noised = batch.vae_t, batch.noised
    batch.vae_x = torch.where(noised[:, None, None], noisy(x0, batch.vae_noise, t), x0)
    batch.target_v = velocity_target(x0, batch.vae_noise)[noised]
    return batch


def embed(model: Bagel, batch: Batch) -> Tensor:
    """Token embeddings ``[B, S, D]``: text embeddings, with ViT and VAE tokens scattered into their places."""
    x = model.embed_text(batch.text_ids)
    B, S, D = x.shape
    flat = x.reshape(B * S, D)
    if batch.vit_pixels is not None:
        N, n = batch.vit_pixels.shape[:2]
        vit = model.embed_vit(batch.vit_pixels.reshape(N * n, -1), batch.vit_ids.repeat(N), [n] * N)
        flat = flat.index_put((batch.vit_index,), vit.to(flat.dtype))
    if batch.vae_x is not None:
        lat = model.embed_latents(batch.vae_x, batch.vae_t, batch.vae_ids)
        flat = flat.index_put((batch.vae_index,), lat.reshape(-1, D).to(flat.dtype))
    return flat.view(B, S, D)


@dataclass
class Losses:
    ce_sum: Tensor
    ce_count: int
    mse_sum: Tensor
    mse_count: int  # number of latent values
    image_states: Tensor | None = None  # [N_noised, n, D]: the noised image tokens after ``probe_layer``

    @property
    def ce(self) -> Tensor:
        return self.ce_sum / max(self.ce_count, 1)

    @property
    def mse(self) -> Tensor:
        return self.mse_sum / max(self.mse_count, 1)


def losses(model: Bagel, batch: Batch, probe_layer: int | None = None) -> Losses:
    """Summed next-token cross-entropy and flow-matching squared error (callers normalise, possibly globally).
    ``probe_layer`` (1-based) also returns the noised image tokens' hidden states after that decoder layer, for
    auxiliary losses on them (``recipes/alignment.py``)."""
    out = model.lm(embed(model, batch), batch.positions, gen=batch.gen, mask=batch.mask,
                   return_layer_states=probe_layer is not None)
    hidden = out.hidden
    zero = hidden.sum() * 0.0
    sel = batch.labels != IGNORE
    ce_sum, ce_count = zero, int(sel.sum())
    if ce_count:
        logits = model.logits(hidden[sel]).float()
        ce_sum = torch.nn.functional.cross_entropy(logits, batch.labels[sel], reduction="sum")
    mse_sum, mse_count, probed = zero, 0, None
    if batch.target_v is not None and batch.target_v.numel():
        v = model.velocity(_noised_tokens(hidden, batch)).float()
        mse_sum = (v - batch.target_v).pow(2).sum()
        mse_count = batch.target_v.numel()
        if probe_layer is not None:
            probed = _noised_tokens(out.layer_states[probe_layer - 1], batch)
    return Losses(ce_sum, ce_count, mse_sum, mse_count, probed)


@dataclass
class RowLosses:
    """The same two losses summed per row (sample) of the batch, with their counts: ``[B]`` each."""

    ce_sum: Tensor
    ce_count: Tensor
    mse_sum: Tensor
    mse_count: Tensor  # latent values


def row_losses(model: Bagel, batch: Batch) -> RowLosses:
    """``losses`` per row, for a batch whose rows belong to different task groups (each group normalised on its
    own by the caller): one forward where there would be one per group."""
    hidden = model.lm(embed(model, batch), batch.positions, gen=batch.gen, mask=batch.mask).hidden
    B, S, _ = hidden.shape
    zeros = hidden.new_zeros(B, dtype=torch.float32)
    sel = batch.labels != IGNORE
    rows = torch.arange(B, device=hidden.device)[:, None].expand(B, S)[sel]
    tokens = torch.nn.functional.cross_entropy(model.logits(hidden[sel]).float(), batch.labels[sel], reduction="none")
    ce_sum, ce_count = zeros.index_add(0, rows, tokens), sel.sum(1)
    mse_sum, mse_count = zeros, torch.zeros_like(ce_count)
    if batch.target_v is not None and batch.target_v.numel():
        v = model.velocity(_noised_tokens(hidden, batch)).float()
        N, n, P = batch.vae_x.shape
        image_rows = (batch.vae_index.view(N, n)[:, 0] // S)[batch.noised]
        mse_sum = zeros.index_add(0, image_rows, (v - batch.target_v).pow(2).sum((1, 2)))
        mse_count = mse_count.index_add(0, image_rows, torch.full_like(image_rows, n * P))
    return RowLosses(ce_sum, ce_count, mse_sum, mse_count)


def _noised_tokens(hidden: Tensor, batch: Batch) -> Tensor:
    """The noised VAE blocks' tokens of ``hidden [B, S, D]``, as ``[N_noised, n, D]``."""
    B, S, D = hidden.shape
    N, n, _ = batch.vae_x.shape
    return hidden.reshape(B * S, D)[batch.vae_index].view(N, n, D)[batch.noised]
