"""Incremental decoding with the KV cache equals one full forward; RoPE positions and routing on a mixed sequence;
the buffered cache equals plain concatenation and reallocates O(log T) times while decoding."""

import json

import torch
from random_model import random_micro_model

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import load_pretrained, open_safetensors, save_pretrained
from hyperbagel.model.config import VAEConfig
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.kv_cache import KVCache


@torch.no_grad()
def test_cached_decoding_equals_full_forward():
    model = random_micro_model()
    fwd = Forwarder(model)
    ids = [0, 5, 9, 12, 7, 1]
    full = Context.empty(model)
    ref = fwd.prefill_text(full, [ids]).hidden[0]
    ctx = Context.empty(model)
    fwd.prefill_text(ctx, [ids[:2]])
    states = []
    for k in range(2, len(ids)):
        out = fwd.text_forward(ctx, torch.tensor([[ids[k]]]), torch.tensor([[k]]))
        states.append(out.hidden[0, -1])
    assert torch.allclose(torch.stack(states), ref[2:], atol=1e-5)


@torch.no_grad()
def test_image_block_shares_one_position_and_advances_by_one():
    model = random_micro_model()
    fwd = Forwarder(model)
    ctx = Context.empty(model, batch=2)
    fwd.prefill_text(ctx, [[0, 5, 1], [0, 5, 6, 7, 1]])  # rows of different lengths
    assert ctx.rope.tolist() == [3, 5]
    latents = torch.randn(2, 16, model.cfg.patch_latent_dim)
    ids = torch.arange(16)
    fwd.prefill_vae(ctx, latents, ids)
    assert ctx.rope.tolist() == [4, 6]
    assert ctx.valid.sum(1).tolist() == [3 + 18, 5 + 18]
    before = ctx.length
    v, _ = fwd.velocity(ctx, latents, torch.tensor([0.5, 0.5]), ids)
    assert ctx.length == before and v.shape == latents.shape  # a denoised block never enters the cache
    # row 0 in a padded batch equals row 0 alone
    alone = Context.empty(model)
    fwd.prefill_text(alone, [[0, 5, 1]])
    fwd.prefill_vae(alone, latents[:1], ids)
    v0, _ = fwd.velocity(alone, latents[:1], torch.tensor([0.5]), ids)
    assert torch.allclose(v0[0], v[0], atol=1e-5)


def test_checkpoint_round_trip(tmp_path):
    model = random_micro_model()
    vae = AutoEncoder(model.cfg.vae)
    save_pretrained(tmp_path, model, vae)
    loaded, loaded_vae = load_pretrained(tmp_path)
    assert loaded.cfg == model.cfg
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(vae.state_dict().items(), loaded_vae.state_dict().items()):
        assert torch.equal(a, b), k
    with open_safetensors(tmp_path / "ae.safetensors") as f:  # the autoencoder file also describes itself
        assert VAEConfig.from_dict(json.loads(f.metadata()["config"])) == vae.config


class _Concatenating:
    """The cache as it was before buffers: every store concatenates, nothing is written in place."""

    def __init__(self):
        self.k = self.v = None

    def extend(self, k, v, store):
        if self.k is not None:
            k, v = torch.cat([self.k, k], 2), torch.cat([self.v, v], 2)
        if store:
            self.k, self.v = k, v
        return k, v


def test_buffered_cache_equals_concatenation_through_stores_crops_copies_and_keeps():
    g = torch.Generator().manual_seed(0)
    cache, ref = KVCache(1), _Concatenating()
    branches = []  # (cache, reference) pairs made by copy, checked at the end

    def new(m):
        return torch.randn(2, 3, m, 4, generator=g), torch.randn(2, 3, m, 4, generator=g)

    for step in range(60):
        op = int(torch.randint(6, (), generator=g))
        if op <= 2 or ref.k is None:  # store 1..8 positions (decoding, a verified draft, a prefill)
            k, v = new(int(torch.randint(1, 9, (), generator=g)))
            got, want = cache.extend(0, k, v, store=True), ref.extend(k, v, True)
        elif op == 3:  # a denoising forward: attend without storing
            k, v = new(5)
            got, want = cache.extend(0, k, v, store=False), ref.extend(k, v, False)
        elif op == 4:  # reject speculative tokens
            n = int(torch.randint(ref.k.shape[2] + 1, (), generator=g))
            cache.crop(n)
            ref.k, ref.v = ref.k[:, :, :n], ref.v[:, :, :n]
            got, want = (cache.keys[0], cache.values[0]), (ref.k, ref.v)
        else:  # a branch of this context, which then diverges
            other, other_ref = cache.copy(), _Concatenating()
            other_ref.k, other_ref.v = ref.k, ref.v
            k, v = new(3)
            other.extend(0, k, v, store=True), other_ref.extend(k, v, True)
            branches.append((other, other_ref))
            got, want = (cache.keys[0], cache.values[0]), (ref.k, ref.v)
        assert cache.length == ref.k.shape[2]
        for a, b in zip(got, want):
            assert torch.equal(a, b), step
    for other, other_ref in branches:  # the original's later stores never reached a branch, nor the other way
        assert torch.equal(other.keys[0], other_ref.k) and torch.equal(other.values[0], other_ref.v)


def test_decoding_token_by_token_reallocates_logarithmically_often():
    cache = KVCache(1)
    cache.extend(0, torch.zeros(1, 2, 100, 4), torch.zeros(1, 2, 100, 4))  # a prefilled context: kept, no copy
    assert cache.allocations == 0
    for t in range(1000):
        cache.extend(0, torch.full((1, 2, 1, 4), float(t)), torch.zeros(1, 2, 1, 4))
    assert cache.length == 1100 and cache.allocations == 4  # 200, 400, 800, 1600 positions
    assert torch.equal(cache.keys[0][0, 0, 100:, 0], torch.arange(1000.0))
