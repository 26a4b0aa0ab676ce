"""The draft model: zero-init layers all learn from the first step, the initial draft is the target's own top,
training-time test sees what inference drafting sees, and checkpoints round-trip (only with their own target)."""

import copy
import dataclasses

import pytest
import torch

from hyperbagel.decode.draft import TargetHead, build_draft, load_draft, save_draft
from hyperbagel.decode.draft_config import VARIANTS
from hyperbagel.errors import HyperBagelError
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.recipes.draft import DraftData, DraftDataConfig, build_data, collate, ttt_loss

DATA = DraftDataConfig(samples=12, chunk_size=6, max_new_tokens=12, batch=6)


@pytest.fixture(scope="module")
def target(micro_teacher):
    model, _ = load_pretrained(micro_teacher)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def data(micro_teacher, target, tmp_path_factory):
    folder = tmp_path_factory.mktemp("draft-data")
    build_data(DATA, micro_teacher, folder, progress=False)
    return DraftData(folder, DATA, TargetHead.of(target))


def _kinds(data):
    records = [r for c in range(DATA.chunks) for r in data.records(c)]
    return {r["kind"]: r["index"] for r in records}


def _first_step_grads(target, data, cfg):
    draft = build_draft(cfg, target).train()
    zero = draft.zero_init_modules()
    assert all(not m.weight.any() for m in zero.values())  # really zero-initialised
    batch = collate([data.get(i) for i in range(6)])
    ttt_loss(draft, TargetHead.of(target), batch, 5, 0.8, cfg.ce_weight).loss.backward()
    return {name: m.weight.grad for name, m in zero.items()}


def test_every_zero_initialised_layer_gets_a_gradient_on_the_first_step(target, data):
    grads = _first_step_grads(target, data, VARIANTS["hyper-bagel"])
    assert set(grads) == {"fc1", "fc2", "aggregate.o_proj", "dec.self_attn.o_proj", "dec.mlp.down_proj"}
    for name, g in grads.items():
        assert g is not None and g.norm() > 0, name
        assert (g != 0).float().mean() > 0.9, name  # every output and input takes part, not a corner
    # the paper's wiring taken literally (no identity path around fc1 and fc2) starves all but fc2
    starved = _first_step_grads(target, data, dataclasses.replace(VARIANTS["hyper-bagel"], bypass=False))
    assert starved["fc2"].norm() > 0
    assert all(g is None or g.norm() == 0 for name, g in starved.items() if name != "fc2")


def test_initial_draft_is_the_target_top_one_position_late(target, data):
    draft = build_draft(VARIANTS["hyper-bagel"], target).eval()
    head = TargetHead.of(target)
    row = data.get(_kinds(data)["think"])  # text only: the draft's causal mask is the target's mask
    states, ids, pos = row["states"].float()[None], row["ids"][None], row["positions"][None]
    S = ids.shape[1]
    mask = torch.ones(S, S, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        feature = draft.features(states, pos, mask, None)
        high = draft.skip[2]
        assert torch.equal(feature, states[:, :, high])  # Dec, fc1 and the aggregation start as identities
        out = draft(feature, head.embed(ids.roll(-1, 1)), pos, mask, None)
    # the two draft layers are the target's last two, reading the input of the first of them
    torch.testing.assert_close(out, states[:, :, -1], rtol=0, atol=2e-2)


@pytest.mark.parametrize("variant", ["hyper-bagel", "eagle3"])
def test_training_time_test_sees_what_inference_drafting_sees(target, data, variant):
    """Each unrolled training step equals drafting at inference: catch up on rows ≤ i, then feed the draft its own
    outputs with the true next tokens (padding and mixed kinds in one batch)."""
    draft = build_draft(VARIANTS[variant], target, seed=1).eval()
    for p in draft.parameters():  # move off the zero init so every path matters
        p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
    head = TargetHead.of(target)
    kinds = _kinds(data)
    rows = [data.get(kinds[k]) for k in ("think", "vqa", "interleaved") if k in kinds]
    batch = collate(rows)
    steps = 4
    with torch.no_grad():
        res = ttt_loss(draft, head, batch, steps, 1.0, 0.0)
        target_logp = torch.log_softmax(head.logits(batch.states[:, :, -1]), -1)
        kls = [[] for _ in range(steps)]
        for b, r in enumerate(rows):
            S = r["ids"].shape[0]
            states, ids, pos = batch.states[b:b + 1, :S], batch.ids[b:b + 1, :S], batch.positions[b:b + 1, :S]
            nxt = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -1)], 1)
            answer = batch.answer[b, :S]
            for i in range(S - 1):
                if not answer[i + 1: i + 1 + steps].any():
                    continue
                dec, cache = draft.new_caches()
                mask = torch.ones(i + 1, i + 1, dtype=torch.bool).tril()[None, None]
                f = draft.features(states[:, : i + 1], pos[:, : i + 1], mask, dec)
                out = draft(f, head.embed(nxt[:, : i + 1]), pos[:, : i + 1], mask, cache)[:, -1:]
                for j in range(steps):
                    if i + 1 + j >= S:
                        break
                    if j:
                        out = draft(out, head.embed(ids[:, i + 1 + j: i + 2 + j]), pos[:, i: i + 1] + j, None, cache)
                    if answer[i + 1 + j]:
                        logp = torch.log_softmax(head.logits(out[0, 0]), -1)
                        t = target_logp[b, i + 1 + j]
                        kls[j].append(float((t.exp() * (t - logp)).sum()))
    for j in range(steps):
        assert res.kl[j] == pytest.approx(sum(kls[j]) / len(kls[j]), rel=1e-4, abs=1e-6), j


def test_checkpoint_round_trip_and_target_check(target, tmp_path):
    draft = build_draft(VARIANTS["hyper-bagel"], target, seed=3)
    for p in draft.parameters():
        p.data.normal_()
    save_draft(tmp_path, draft, TargetHead.of(target))
    loaded = load_draft(tmp_path, target)
    assert loaded.cfg == draft.cfg
    for (k, a), (_, b) in zip(draft.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any("lm_head" in k or "embed_tokens" in k or "moe_gen" in k for k in loaded.state_dict())
    changed = copy.deepcopy(target)
    with torch.no_grad():
        changed.language_model.lm_head.weight.add_(1e-3)
    with pytest.raises(HyperBagelError, match="different target"):
        load_draft(tmp_path, changed)


def test_meta_query_aggregation_equals_attention_over_projected_states(target):
    from hyperbagel.decode.draft import MetaQueryAggregation

    torch.manual_seed(0)
    agg = MetaQueryAggregation(target.cfg.llm, 3)
    for p in agg.parameters():
        p.data.normal_(0, 0.3)
    states = torch.randn(2, 5, target.cfg.llm.num_layers, target.cfg.llm.hidden_size) * 4
    torch.testing.assert_close(agg(states), agg.reference(states), rtol=1e-5, atol=1e-5)


def test_decoding_layers_compute_the_draft_and_follow_its_weights(target, data):
    """``fused_layers()`` gives the modules' outputs (catch-up block, then one step over the cache), and is rebuilt
    after a weight changes in place."""
    draft = build_draft(VARIANTS["hyper-bagel"], target, seed=2).eval()
    for p in draft.parameters():
        p.data.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.02)
    head = TargetHead.of(target)
    row = data.get(0)
    states, ids, pos = row["states"][None], row["ids"][None], row["positions"][None]
    from hyperbagel.model.masks import Append

    def run(layers):
        dec, cache = draft.new_caches()
        f = draft.features(states, pos, Append("causal"), dec, layers)
        out = draft(f, head.embed(ids), pos, Append("causal"), cache, layers=layers)
        step = draft(out[:, -1:], head.embed(ids[:, :1]), pos[:, -1:] + 1, None, cache, layers=layers)
        return out, step

    with torch.no_grad():
        fused = draft.fused_layers()
        assert draft.fused_layers().layers[0] is fused.layers[0]  # nothing changed: not rebuilt
        for got, want in zip(run(fused), run(None)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        draft.layers[0].mlp.down_proj.weight.mul_(2)
        assert draft.fused_layers().layers[0] is not fused.layers[0]
        for got, want in zip(run(draft.fused_layers()), run(None)):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
