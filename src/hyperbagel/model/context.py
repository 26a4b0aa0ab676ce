"""Inference contexts and single-block forwards: the building blocks every loop (decoding, sampling) calls.

A ``Context`` is BAGEL's ``{kv_lens, ropes, past_key_values}`` with a batch dimension: the KV cache, a mask of
which cached positions are real tokens (rows of a batch may differ in length), and each row's next RoPE position.
Block rules (bagel.md §1.8–1.9): a text block takes consecutive positions and is causal; an image block (ViT or
VAE, markers included) shares one position, is bidirectional and advances the counter by one; a block being
denoised attends to the cache but never enters it.

Blocks (``Block``) can be prefilled together in one forward (block-causal among themselves), or deferred: a
context's pending blocks run inside its next forward, so the last prefill of a sampler's context costs no forward
of its own but rides with the first denoising one (whose own block is then cropped from the cache).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from hyperbagel.model.bagel import Bagel
from hyperbagel.model.fused_layer import FusedStack
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append
from hyperbagel.model.qwen2_mot import LMOutput, Routing


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


@dataclass(frozen=True)
class Block:
    """A block to append to a context: embeddings ``x [B, S, D]``, how its tokens attend among themselves
    (``"full"``: an image block, one RoPE position; ``"causal"``: text, consecutive positions), the generation-expert
    mask, which tokens are real (a text row may end in padding), token ids for a draft's trace (−1 for image
    tokens) and how far it moves each row's RoPE counter."""

    x: Tensor
    within: str
    gen: Tensor | None  # [B, S] bool; None: every token takes the understanding expert
    valid: Tensor  # [B, S] bool
    ids: Tensor  # [B, S] long
    advance: Tensor  # [B] long
    padded: bool = False  # some row ends in padding (known on the host, so nothing is asked of the device)

    @property
    def length(self) -> int:
        return self.x.shape[1]

    def positions(self, start: Tensor) -> Tensor:
        """RoPE positions ``[B, S]`` from each row's next position ``start [B]``."""
        B, S = self.x.shape[:2]
        if self.within == "full":
            return start[:, None].expand(B, S)
        return start[:, None] + torch.arange(S, device=start.device)[None]


def block_pattern(blocks: list[Block], device: torch.device) -> Tensor:
    """How the tokens of ``blocks``, appended in order, attend among themselves ``[S, S]``: each block sees the
    blocks before it whole and itself by its rule (bidirectional or causal)."""
    S = sum(b.length for b in blocks)
    pattern = torch.zeros(S, S, dtype=torch.bool, device=device)
    start = 0
    for b in blocks:
        end = start + b.length
        pattern[start:end, :start] = True
        own = torch.ones(b.length, b.length, dtype=torch.bool, device=device)
        pattern[start:end, start:end] = own if b.within == "full" else own.tril()
        start = end
    return pattern


@dataclass
class Context:
    cache: KVCache
    valid: Tensor  # [B, T] bool
    rope: Tensor  # [B] long: the next RoPE position
    # When a list, every prefill appends its block's layer states (for a speculative draft); decoding does not.
    trace: list[TraceBlock] | None = None
    padded: bool = False  # some cached position is padding (rows of a text block differed in length)
    pending: list[Block] = field(default_factory=list)  # deferred blocks: they run inside the next forward
    deferred_by: object | None = None  # the model that deferred them

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
        return Context(self.cache.copy(), self.valid.clone(), self.rope.clone(), trace, self.padded,
                       list(self.pending), self.deferred_by)  # pending blocks are run by each copy that is used

    def crop(self, length: int) -> None:
        self._no_pending("crop")
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
        self._no_pending("select rows of")
        trace = None if self.trace is None else [
            TraceBlock(*(t[batch_index] for t in (b.states, b.ids, b.positions, b.valid))) for b in self.trace]
        return Context(self.cache.select(batch_index), self.valid[batch_index], self.rope[batch_index], trace,
                       self.padded)

    def _no_pending(self, what: str) -> None:
        if self.pending:
            raise ValueError(f"cannot {what} a context with deferred blocks: prefill them first")

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

    # ----- blocks -----
    def prefill(self, ctx: Context, blocks: list[Block], layer_states: bool = False,
                defer: bool = False) -> LMOutput | None:
        """Append ``blocks`` (after the context's pending ones) in one forward; returns the output over ``blocks``.
        With ``defer`` they join the pending blocks instead and run inside the context's next forward."""
        if defer:
            ctx.pending.extend(blocks)
            ctx.deferred_by = self.model
            return None
        if not blocks and not ctx.pending:
            return None
        out, _ = self._forward_blocks(ctx, blocks, layer_states)
        return out

    def _forward_blocks(self, ctx: Context, blocks: list[Block], layer_states: bool = False,
                        denoised: Block | None = None) -> tuple[LMOutput, LMOutput | None]:
        """One forward over ``ctx``'s pending blocks and ``blocks`` (stored; at least one) and ``denoised`` (attends
        to them all, never stored). Returns the outputs over ``blocks`` and over ``denoised``."""
        if self.model is not ctx.deferred_by and any(b.gen is not None for b in ctx.pending):
            # a student shares the teacher's understanding weights, not its generation expert: a context's VAE block
            # computed by another model would not be the context it was built as
            raise ValueError("deferred blocks with generation-expert tokens must be run by the model that deferred "
                             "them: prefill them first")
        stored, ctx.pending = [*ctx.pending, *blocks], []
        positions, rope = [], ctx.rope
        for b in stored:
            positions.append(b.positions(rope))
            rope = rope + b.advance
        run = stored if denoised is None else [*stored, denoised]
        if denoised is not None:
            positions.append(denoised.positions(rope))
        x = torch.cat([b.x for b in run], dim=1) if len(run) > 1 else run[0].x
        gen = None if all(b.gen is None for b in run) else torch.cat(
            [torch.zeros_like(b.valid) if b.gen is None else b.gen for b in run], dim=1)
        S = x.shape[1]
        if len(run) == 1:
            attention = ctx.attention(run[0].within, S)
        else:  # padding inside the new tokens is hidden from every later block by the key mask
            padded = ctx.padded or any(b.padded for b in run[:-1])
            keys = torch.cat([ctx.valid, *[b.valid for b in run]], dim=1) if padded else None
            attention = Append(block_pattern(run, self.device), keys)
        record = ctx.trace is not None
        cached = ctx.cache.length
        out = self._lm(ctx, x, torch.cat(positions, dim=1), gen, attention, True, layer_states or record)
        n = sum(b.length for b in stored)
        ctx.cache.crop(cached + n)  # a denoised block was written past the stored ones: drop it
        if record:
            offset = 0
            for b, pos in zip(stored, positions):
                states = torch.stack([s[:, offset:offset + b.length] for s in out.layer_states], dim=2)
                ctx.trace.append(TraceBlock(states, b.ids, pos, b.valid))
                offset += b.length
        ctx.valid = torch.cat([ctx.valid, *[b.valid for b in stored]], dim=1)
        ctx.padded = ctx.padded or any(b.padded for b in stored)
        ctx.rope = rope
        mine = self._slice(out, n - sum(b.length for b in blocks), n)
        return mine, (self._slice(out, n, S) if denoised is not None else None)

    @staticmethod
    def _slice(out: LMOutput, start: int, end: int) -> LMOutput:
        if start == 0 and end == out.hidden.shape[1]:
            return out
        states = None if out.layer_states is None else [s[:, start:end] for s in out.layer_states]
        return LMOutput(out.hidden[:, start:end], states)

    # ----- text -----
    def text_block(self, rows: list[list[int]]) -> Block:
        """One text block per row (ids already include ``<|im_start|>`` … ``<|im_end|>``), padded at the end."""
        lens = torch.tensor([len(r) for r in rows], device=self.device)
        S = int(lens.max())
        ids = torch.full((len(rows), S), self.eos, dtype=torch.long, device=self.device)
        for b, r in enumerate(rows):
            ids[b, : len(r)] = torch.tensor(r, dtype=torch.long)
        valid = torch.arange(S, device=self.device)[None] < lens[:, None]
        if self._text_stack is not None:  # every answer or plan starts with a text prefill: check the copies here
            self._text_layers = self._text_stack.layers()
        return Block(self.model.embed_text(ids), "causal", None, valid, ids, lens, min(len(r) for r in rows) < S)

    def prefill_text(self, ctx: Context, rows: list[list[int]], layer_states: bool = False,
                     defer: bool = False) -> LMOutput | None:
        """Append one text block per row (``text_block``)."""
        if len(rows) != ctx.batch:
            raise ValueError(f"{len(rows)} text rows for a context of batch {ctx.batch}")
        return self.prefill(ctx, [self.text_block(rows)], layer_states, defer)

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
        if ctx.pending:
            self.prefill(ctx, [])
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
    def _image_block(self, inner: Tensor, gen: bool) -> Block:
        """``inner [B, N, D]`` wrapped in the vision markers (text tokens: understanding weights); ``gen``: the
        inner tokens take the generation expert (VAE latents)."""
        B, N = inner.shape[:2]
        markers = self.model.embed_text(torch.tensor([self.soi, self.eoi], device=self.device))
        x = torch.cat([markers[0].expand(B, 1, -1), inner, markers[1].expand(B, 1, -1)], dim=1)
        ones = torch.ones(B, N + 2, dtype=torch.bool, device=self.device)
        mask = None
        if gen:
            mask = ones.clone()
            mask[:, 0] = mask[:, -1] = False
        ids = torch.full((B, N + 2), -1, dtype=torch.long, device=self.device)
        ids[:, 0], ids[:, -1] = self.soi, self.eoi
        return Block(x, "full", mask, ones, ids, torch.ones(B, dtype=torch.long, device=self.device))

    def vit_block(self, pixel_tokens: Tensor, position_ids: Tensor) -> Block:
        """A ViT block per row: ``pixel_tokens [B, N, 3·p²]`` (same-size images), ids ``[N]``."""
        B, N = pixel_tokens.shape[:2]
        emb = self.model.embed_vit(pixel_tokens.reshape(B * N, -1), position_ids.repeat(B), [N] * B)
        return self._image_block(emb.view(B, N, -1), gen=False)

    def latent_block(self, latents: Tensor, t: Tensor, position_ids: Tensor, text_scale: Tensor | None = None,
                     image_scale: Tensor | None = None) -> Block:
        """A VAE block per row, ``latents [B, N, P]`` at times ``t [B]`` (0: clean)."""
        return self._image_block(self.model.embed_latents(latents, t, position_ids, text_scale, image_scale),
                                 gen=True)

    def prefill_vit(self, ctx: Context, pixel_tokens: Tensor, position_ids: Tensor, layer_states: bool = False,
                    defer: bool = False) -> LMOutput | None:
        """Append one ViT block per row (``vit_block``)."""
        return self.prefill(ctx, [self.vit_block(pixel_tokens, position_ids)], layer_states, defer)

    def prefill_vae(self, ctx: Context, latents: Tensor, position_ids: Tensor, layer_states: bool = False,
                    defer: bool = False) -> LMOutput | None:
        """Append a clean VAE block (t = 0, generation expert): ``latents [B, N, P]``."""
        t = torch.zeros(latents.shape[0], device=self.device)
        return self.prefill(ctx, [self.latent_block(latents, t, position_ids)], layer_states, defer)

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

        Returns ``(v, LMOutput)``; the block never enters the cache (the context's pending blocks, if any, run in
        the same forward and do). Guidance scales ``[B]`` are for CFG-distilled students (models with guidance
        embedders) only.
        """
        block = self.latent_block(x_t, t, position_ids, text_scale, image_scale)
        if ctx.pending:
            if torch.is_grad_enabled():
                raise ValueError("a context with deferred blocks is for sampling: prefill it before training on it")
            _, out = self._forward_blocks(ctx, [], layer_states, denoised=block)
        else:
            out = self._denoise_forward(ctx, block, layer_states)
        return self.model.velocity(out.hidden[:, 1:-1]).float(), out

    def _denoise_forward(self, ctx: Context, block: Block, layer_states: bool) -> LMOutput:
        """A block over the context that never enters the cache, by the (possibly compiled) denoising model."""
        routing = Routing.framed(*block.x.shape[:2], block.x.device)  # a latent block: markers + generation tokens
        out = self._lm(ctx, block.x, block.positions(ctx.rope), routing, ctx.attention("full", block.length),
                       False, layer_states, self._denoise)
        if self._graphs:  # keep this call's outputs past the next replay (CFG's branches)
            out.hidden = out.hidden.clone()
            out.layer_states = None if out.layer_states is None else [s.clone() for s in out.layer_states]
        return out
