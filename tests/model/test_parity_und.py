"""Understanding parity with the reference BAGEL: text and ViT prefills, then greedy decoding with the KV cache.

Fixtures ``und_text``, ``und_text_eos``, ``und_image`` (see the fixtures README). The reference's
``generate_text(max_length=N)`` makes N forwards and returns the start token plus the first N − 1 argmaxes; our
``generate_text(max_new_tokens=N)`` makes the same N forwards and returns all N argmaxes (without the start token).
"""

from __future__ import annotations

import pytest
import torch
from fixtures import load_fixture
from parity import check, grid_ids, one_thread, ref_model, stack_layers

from hyperbagel.decode.generate import generate_text
from hyperbagel.model.context import Context, Forwarder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with one_thread():
        yield


def decode_with_logits(fwd: Forwarder, ctx: Context, steps: int):
    """Run the real decoding loop and record the logits of every step (a hook on ``lm_head``)."""
    logits: list[torch.Tensor] = []
    handle = fwd.model.language_model.lm_head.register_forward_hook(lambda m, i, out: logits.append(out[0]))
    try:
        result = generate_text(fwd, ctx, steps)
    finally:
        handle.remove()
    return result, torch.stack(logits)


def check_text_prefill(fwd: Forwarder, ctx: Context, tensors: dict, meta: dict) -> None:
    block = meta["text_block"]
    assert block["ids"] == meta["prompt_ids"] and ctx.rope.tolist() == [block["positions"][0]]
    assert ctx.length == block["key_values_lens"][0]
    ids = torch.tensor(meta["prompt_ids"])
    assert torch.equal(fwd.model.embed_text(ids), tensors["text_prefill_input"])
    with torch.no_grad():
        out = fwd.prefill_text(ctx, [meta["prompt_ids"]], layer_states=True)
        logits = fwd.model.logits(out.hidden[0])
    check(stack_layers(out), tensors["text_prefill_layers"], what="prefill layers")
    check(out.hidden[0], tensors["text_prefill_hidden"], what="prefill hidden")
    check(logits, tensors["text_prefill_logits"], what="prefill logits")


def check_decoding(fwd: Forwarder, ctx: Context, tensors: dict, meta: dict) -> None:
    assert ctx.rope.tolist() == [meta["decode_start_position"]] and ctx.length == meta["context_kv_len"]
    assert fwd.bos == meta["decode_start_token"]
    before = fwd.forwards
    result, logits = decode_with_logits(fwd, ctx, meta["max_length"])
    steps = len(meta["step_argmax"])
    assert fwd.forwards - before == steps
    check(logits, tensors["step_logits"], what="step logits")
    assert torch.equal(tensors["generated_ids"], torch.tensor(meta["generated_ids"]))
    if meta["stopped_on_eos"]:
        assert result.stopped == [True] and meta["step_argmax"][-1] == fwd.eos
        assert result.tokens[0] == meta["generated_ids"][1:] == meta["step_argmax"][:-1]
    else:
        assert result.stopped == [False]
        assert result.tokens[0] == meta["step_argmax"]
        assert result.tokens[0][:-1] == meta["generated_ids"][1:]


@pytest.mark.parametrize("name", ["und_text", "und_text_eos"])
def test_text_prefill_and_greedy_decoding(name):
    tensors, meta = load_fixture(name)
    fwd = Forwarder(ref_model())
    ctx = Context.empty(fwd.model)
    check_text_prefill(fwd, ctx, tensors, meta)
    check_decoding(fwd, ctx, tensors, meta)


def test_eos_fixture_stops_early():
    _, meta = load_fixture("und_text_eos")
    assert meta["generated_ids"] == [256, 236, 122] and len(meta["step_argmax"]) == 3 < meta["max_length"]


def test_vit_block_then_text_and_decoding():
    tensors, meta = load_fixture("und_image")
    model = ref_model()
    fwd = Forwarder(model)
    cfg, vit = model.cfg, meta["vit_block"]
    h, w = (s // cfg.vit.patch_size for s in vit["image_hw"])
    ids = grid_ids(vit["packed_vit_position_ids"], h, w, cfg.vit_max_num_patch_per_side)
    patches = tensors["vit_pixel_tokens"]
    with torch.no_grad():
        features = model.vit_model(patches, ids, vit["vit_token_seqlens"])
        check(features, tensors["vit_encoder_out"], what="ViT encoder")
        check(model.connector(features), tensors["connector_out"], what="connector")
        markers = model.embed_text(torch.tensor(vit["packed_text_ids"]))
        block_input = torch.cat([markers[:1], model.embed_vit(patches, ids, vit["vit_token_seqlens"]), markers[1:]])
        check(block_input, tensors["vit_block_input"], what="ViT block input")

        ctx = Context.empty(model)
        out = fwd.prefill_vit(ctx, patches[None], ids, layer_states=True)
    assert vit["positions"] == [0] * len(vit["positions"]) and ctx.rope.tolist() == [1]
    check(stack_layers(out), tensors["vit_block_layers"], what="ViT block layers")
    check(out.hidden[0], tensors["vit_block_hidden"], what="ViT block hidden")
    check_text_prefill(fwd, ctx, tensors, meta)
    check_decoding(fwd, ctx, tensors, meta)
