"""``FusedLayer`` computes what the module's understanding expert computes: one token over a cache, a causal
block, a tree mask, with and without QK-norm, in fp32 and bf16."""

import dataclasses

import pytest
import torch

from hyperbagel.model.fused_layer import FusedLayer
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append
from hyperbagel.model.presets import preset
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, rope_cos_sin

HEAD_DIM = preset("micro").llm.head_dim


def _layer(qk_norm: bool, dtype=torch.float32) -> MoTDecoderLayer:
    cfg = dataclasses.replace(preset("micro").llm, qk_norm=qk_norm)
    torch.manual_seed(0)
    layer = MoTDecoderLayer(cfg)
    with torch.no_grad():
        for p in layer.parameters():  # norms off 1 and biases off 0, so every weight matters
            p.add_(0.1 * torch.randn_like(p))
    return layer.to(dtype).eval()


def _run(layer, x, positions, mask, cache, update):
    cos, sin = rope_cos_sin(positions, HEAD_DIM, 1e4, x.dtype)
    return layer(x, None, cos, sin, mask, cache, 0, update)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_equals_the_module_over_a_cache_and_a_block(qk_norm):
    layer = _layer(qk_norm)
    fused = FusedLayer(layer)
    g = torch.Generator().manual_seed(1)
    D = layer.mlp.gate_proj.in_features
    context, block, token = (torch.randn(1, n, D, generator=g) for n in (7, 3, 1))
    tree = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    tree_mask = torch.cat([torch.ones(3, 7, dtype=torch.bool), tree], 1)[None, None]
    with torch.no_grad():
        caches = {}
        for name, fn in (("module", layer), ("fused", fused)):
            cache = KVCache(1)
            outs = [_run(fn, context, torch.arange(7)[None], Append("causal"), cache, True),
                    _run(fn, block, torch.arange(7, 10)[None], Append("causal"), cache, False),
                    _run(fn, block, torch.tensor([[7, 8, 8]]), tree_mask, cache, False),
                    _run(fn, token, torch.tensor([[7]]), None, cache, True)]
            caches[name] = (outs, cache)
    for a, b in zip(caches["module"][0], caches["fused"][0]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert caches["fused"][1].length == caches["module"][1].length == 8
    torch.testing.assert_close(caches["fused"][1].keys[0], caches["module"][1].keys[0], rtol=1e-5, atol=1e-5)


def test_bf16_normalises_as_the_module_does():
    layer = _layer(True, torch.bfloat16)
    x = torch.randn(1, 4, layer.mlp.gate_proj.in_features, dtype=torch.bfloat16,
                    generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = _run(layer, x, torch.arange(4)[None], Append("causal"), None, True)
        got = _run(FusedLayer(layer), x, torch.arange(4)[None], Append("causal"), None, True)
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_refuses_routed_tokens():
    with pytest.raises(ValueError, match="understanding expert only"):
        FusedLayer(_layer(True))(torch.zeros(1, 1, 8), object(), None, None, None, None, 0, True)


def test_a_forwarder_with_fused_text_steps_trains_through_the_modules():
    """Under autograd the text step takes the modules (the copies hold no gradient); without it, the copies, which
    follow an in-place weight change."""
    from hyperbagel.model.checkpoint import build_model
    from hyperbagel.model.context import Context, Forwarder

    torch.manual_seed(0)
    model = build_model(preset("micro"))
    fwd = Forwarder(model, fused_text=True)

    def step():
        ctx = Context.empty(model, 1)
        with torch.no_grad():
            fwd.prefill_text(ctx, [[3, 4, 5]])
        return fwd.text_forward(ctx, torch.tensor([[6, 7]]), torch.tensor([[3, 4]])).hidden

    step().sum().backward()
    q = model.lm.layers[0].self_attn.q_proj.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    with torch.no_grad():
        before = step()
        q.mul_(1.5)
        after = step()
        model.lm.layers[0].self_attn.q_proj.weight.div_(1.5)
    assert not torch.allclose(before, after)  # the copies were rebuilt after the change
    unfused = Forwarder(model)
    with torch.no_grad():
        ctx = Context.empty(model, 1)
        unfused.prefill_text(ctx, [[3, 4, 5]])
        want = unfused.text_forward(ctx, torch.tensor([[6, 7]]), torch.tensor([[3, 4]])).hidden
        torch.testing.assert_close(step(), want, rtol=1e-5, atol=1e-5)


def test_compiles_with_dynamic_shapes_in_one_graph():
    """Compiled text steps have dynamic shapes; a graph break inside the layer (as the SymBool ``H != Hkv`` once made
    in scaled_dot_product_attention's ``enable_gqa``) split every layer and recompiled it per layer index."""
    fused = FusedLayer(_layer(True))
    D = fused.o_weight.shape[0]
    step = torch.compile(fused.__call__, dynamic=True, fullgraph=True, backend="eager")
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        cache = KVCache(1)
        _run(fused, torch.randn(1, 5, D, generator=g), torch.arange(5)[None], Append("causal"), cache, True)
        block = torch.randn(1, 3, D, generator=g)
        positions = torch.arange(5, 8)[None]
        expected = _run(fused, block, positions, Append("causal"), cache, False)
        torch.testing.assert_close(_run(step, block, positions, Append("causal"), cache, False), expected)
