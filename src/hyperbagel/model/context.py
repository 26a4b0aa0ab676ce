"""Inference contexts and single-block forwards: the building blocks every loop (decoding, sampling) calls.

A ``Context`` is BAGEL's ``{kv_lens, ropes, past_key_values}`` with a batch dimension: the KV cache, a mask of
which cached positions are real tokens (rows of a batch may differ in length), and each row's next RoPE position.
Block rules (bagel.md §1.8–1.9): a text block takes consecutive positions and is causal; an image block (ViT or
VAE, markers included) shares one position, is bidirectional and advances the counter by one; a block being
denoised attends to the cache but never enters it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.fused_layer import FusedStack
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append
from hyperbagel.model.qwen2_mot import LMOutput


@dataclass(frozen=True)
class TraceBlock:
    """One prefilled block as a speculative draft reads it: the target's hidden state after every layer
    ``[B, S, L, D]``, the token ids ``[B, S]`` (−1 for image tokens), RoPE positions and validity ``[B, S]``."""

    states: Tensor
    ids: Tensor
    positions: Tensor
    valid: Tensor

    @property
    def length(self) -> int:
        return self.ids.shape[1]


@dataclass
class Context:
    cache: KVCache
    valid: Tensor  # [B, T] bool
    rope: Tensor  # [B] long: the next RoPE position
    # When a list, every prefill appends its block's layer states (for a speculative draft); decoding does not.
    trace: list[TraceBlock] | None = None
    padded: bool = False  # some cached position is padding (rows of a text block differed in length)

    @classmethod
    def empty(cls, model: Bagel, batch: int = 1, trace: bool = False) -> Context:
        device = model.vae2llm.weight.device
        return cls(
            KVCache(model.cfg.llm.num_layers),
            torch.zeros(batch, 0, dtype=torch.bool, device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
            [] if trace else None,
        )

    @property
    def batch(self) -> int:
        return self.valid.shape[0]

    @property
    def length(self) -> int:
        return self.valid.shape[1]

    def copy(self) -> Context:
        trace = None if self.trace is None else list(self.trace)
        return Context(self.cache.copy(), self.valid.clone(), self.rope.clone(), trace, self.padded)

    def crop(self, length: int) -> None:
        self.cache.crop(length)
        self.valid = self.valid[:, :length]
        if self.trace is not None:
            kept, start = [], 0
            for block in self.trace:
                if start + block.length <= length:
                    kept.append(block)
                elif start < length:
                    n = length - start
                    kept.append(TraceBlock(block.states[:, :n], block.ids[:, :n], block.positions[:, :n],
                                           block.valid[:, :n]))
                start += block.length
            self.trace = kept

    def select(self, batch_index: Tensor) -> Context:
        trace = None if self.trace is None else [
            TraceBlock(*(t[batch_index] for t in (b.states, b.ids, b.positions, b.valid))) for b in self.trace]
        return Context(self.cache.select(batch_index), self.valid[batch_index], self.rope[batch_index], trace,
                       self.padded)

    def attention(self, within: str | Tensor, new: int) -> Append:
        """How ``new`` tokens appended to this context attend (``within``: see ``Append``)."""
        if not self.padded:
            return Append(within)
        ones = torch.ones(self.batch, new, dtype=torch.bool, device=self.valid.device)
        return Append(within, torch.cat([self.valid, ones], dim=1))


class Forwarder:
    """Runs blocks through a ``Bagel`` and counts language-model forwards (the NFE the paper reports)."""

    def __init__(self, model: Bagel, autocast: torch.dtype | None = None, compile: bool = False,
                 fused_text: bool = False):
        self.model = model
        self.forwards = 0
        self.autocast = autocast  # e.g. torch.bfloat16: run the language model under CPU autocast
        tok = model.cfg.special_tokens
        self.bos, self.eos, self.soi, self.eoi = tok.bos, tok.eos, tok.start_of_image, tok.end_of_image
        # Compiled steps: text steps (decoding, verification) grow the cache, so their shapes are dynamic; a
        # denoising forward repeats one shape over a fixed context, so it is compiled static, as a CUDA graph on CUDA.
        # Prefills run once per context and stay eager.
        self.compiled = compile
        self._text_step = self._denoise = model.lm
        self._graphs = compile and self.device.type == "cuda"  # a replay overwrites the previous one's outputs
        # Text steps through FusedLayer copies of the understanding expert (model/fused_layer.py): the same function
        # in fewer kernels, for a third of the language model's weights again in memory (the understanding expert's
        # q/k/v and gate/up); gradients take the modules. The copies are checked against the weights once per text
        # prefill (every answer or plan starts with one), not on every decoding step.
        self._text_stack = FusedStack(model.lm.layers) if fused_text else None
        self._text_layers = None
        if compile:
            self._text_step = torch.compile(model.lm, dynamic=True)
            self._denoise = torch.compile(model.lm, dynamic=False, mode="reduce-overhead" if self._graphs else None)

    @property
    def device(self) -> torch.device:
        return self.model.vae2llm.weight.device

    def _lm(self, ctx: Context, x, positions, gen, mask, update_cache, layer_states=False, lm=None,
            layers=None) -> LMOutput:
        """One language-model forward over ``ctx``'s cache, by ``lm`` (default: the eager model) and ``layers``
        (default: its modules)."""
        self.forwards += 1
        lm = self.model.lm if lm is None else lm
        kwargs = dict(gen=gen, mask=mask, cache=ctx.cache, update_cache=update_cache, return_layer_states=layer_states)
        if layers is not None:
            kwargs["layers"] = layers
        if self.autocast is None:
            return lm(x, positions, **kwargs)
        with torch.autocast(x.device.type, dtype=self.autocast):
            out = lm(x, positions, **kwargs)
        out.hidden = out.hidden.float()
        if out.layer_states is not None:
            out.layer_states = [s.float() for s in out.layer_states]
        return out

    @staticmethod
    def _record(ctx: Context, out: LMOutput, ids: Tensor, positions: Tensor, valid: Tensor) -> None:
        if ctx.trace is not None:
            ctx.trace.append(TraceBlock(torch.stack(out.layer_states, dim=2), ids, positions, valid))

    # ----- text -----
    def prefill_text(self, ctx: Context, rows: list[list[int]], layer_states: bool = False) -> LMOutput:
        """Append one text block per row (ids already include ``<|im_start|>`` … ``<|im_end|>``)."""
        if len(rows) != ctx.batch:
            raise ValueError(f"{len(rows)} text rows for a context of batch {ctx.batch}")
        lens = torch.tensor([len(r) for r in rows], device=self.device)
        S = int(lens.max())
        ids = torch.full((ctx.batch, S), self.eos, dtype=torch.long, device=self.device)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        new_valid = torch.arange(S, device=self.device)[None] < lens[:, None]
        positions = ctx.rope[:, None] + torch.arange(S, device=self.device)[None]
        record = ctx.trace is not None
        if self._text_stack is not None:
            self._text_layers = self._text_stack.layers()
        out = self._lm(ctx, self.model.embed_text(ids), positions, None, ctx.attention("causal", S), True,
                       layer_states or record)
        self._record(ctx, out, ids, positions, new_valid)
        ctx.valid = torch.cat([ctx.valid, new_valid], dim=1)
        ctx.padded = ctx.padded or min(len(r) for r in rows) < S
        ctx.rope = ctx.rope + lens
        return out

    def text_forward(
        self,
        ctx: Context,
        ids: Tensor,
        positions: Tensor,
        within: Tensor | None = None,
        update_cache: bool = True,
        layer_states: bool = False,
    ) -> LMOutput:
        """Feed text tokens ``ids [B, S]`` at ``positions [B, S]`` (decoding, verification).

        ``within [S, S]`` is the mask among the new tokens (default causal; a tree's ancestor mask for
        verification). The caller advances ``ctx.rope``.
        """
        B, S = ids.shape
        attention = ctx.attention("causal" if within is None else within, S)
        if self._text_stack is not None and self._text_layers is None:
            self._text_layers = self._text_stack.layers()
        fused = self._text_layers is not None and not torch.is_grad_enabled()
        out = self._lm(ctx, self.model.embed_text(ids), positions, None, attention, update_cache, layer_states,
                       self._text_step, self._text_layers if fused else None)
        if update_cache:
            ctx.valid = torch.cat([ctx.valid, torch.ones(B, S, dtype=torch.bool, device=self.device)], dim=1)
        return out

    # ----- images -----
    def _image_block(self, inner: Tensor) -> tuple[Tensor, Tensor]:
        """Wrap ``inner [B, N, D]`` in the vision markers; return embeddings and the generation mask shape."""
        B = inner.shape[0]
        markers = self.model.embed_text(torch.tensor([self.soi, self.eoi], device=self.device))
        x = torch.cat([markers[0].expand(B, 1, -1), inner, markers[1].expand(B, 1, -1)], dim=1)
        return x, torch.ones(B, x.shape[1], dtype=torch.bool, device=self.device)

    def _run_image_block(self, ctx: Context, x: Tensor, gen: Tensor | None, update_cache: bool, layer_states: bool):
        B, S = x.shape[:2]
        new_valid = torch.ones(B, S, dtype=torch.bool, device=self.device)
        positions = ctx.rope[:, None].expand(B, S)
        record = update_cache and ctx.trace is not None
        denoising = not update_cache
        lm = self._denoise if denoising else self.model.lm
        out = self._lm(ctx, x, positions, gen, ctx.attention("full", S), update_cache, layer_states or record, lm)
        if denoising and self._graphs:  # keep this call's outputs past the next replay (CFG's branches)
            out.hidden = out.hidden.clone()
            out.layer_states = None if out.layer_states is None else [s.clone() for s in out.layer_states]
        if record:
            ids = torch.full((B, S), -1, dtype=torch.long, device=self.device)
            ids[:, 0], ids[:, -1] = self.soi, self.eoi
            self._record(ctx, out, ids, positions, new_valid)
        if update_cache:
            ctx.valid = torch.cat([ctx.valid, new_valid], dim=1)
            ctx.rope = ctx.rope + 1
        return out

    def prefill_vit(self, ctx: Context, pixel_tokens: Tensor, position_ids: Tensor, layer_states: bool = False):
        """Append one ViT block per row: ``pixel_tokens [B, N, 3·p²]`` (same-size images), ids ``[N]``."""
        B, N = pixel_tokens.shape[:2]
        emb = self.model.embed_vit(pixel_tokens.reshape(B * N, -1), position_ids.repeat(B), [N] * B)
        x, _ = self._image_block(emb.view(B, N, -1))
        return self._run_image_block(ctx, x, None, True, layer_states)

    def _latent_block(self, latents: Tensor, t: Tensor, position_ids: Tensor, text_scale: Tensor | None = None,
                      image_scale: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x, gen = self._image_block(self.model.embed_latents(latents, t, position_ids, text_scale, image_scale))
        gen[:, 0] = gen[:, -1] = False  # the markers are text tokens: understanding weights
        return x, gen

    def prefill_vae(self, ctx: Context, latents: Tensor, position_ids: Tensor, layer_states: bool = False):
        """Append a clean VAE block (t = 0, generation expert): ``latents [B, N, P]``."""
        t = torch.zeros(latents.shape[0], device=self.device)
        x, gen = self._latent_block(latents, t, position_ids)
        return self._run_image_block(ctx, x, gen, True, layer_states)

    def velocity(
        self,
        ctx: Context,
        x_t: Tensor,
        t: Tensor,
        position_ids: Tensor,
        layer_states: bool = False,
        text_scale: Tensor | None = None,
        image_scale: Tensor | None = None,
    ):
        """One denoising forward: the velocity ``[B, N, P]`` of the noised block ``x_t`` at times ``t [B]``.

        Returns ``(v, LMOutput)``; the block never enters the cache. Guidance scales ``[B]`` are for CFG-distilled
        students (models with guidance embedders) only.
        """
        x, gen = self._latent_block(x_t, t, position_ids, text_scale, image_scale)
        out = self._run_image_block(ctx, x, gen, False, layer_states)
        return self.model.velocity(out.hidden[:, 1:-1]).float(), out
