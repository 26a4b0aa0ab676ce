"""Block attention rules: the fused arguments ``resolve_attention`` picks give the dense rule's attention, and the
common inference forwards build no mask per row of a batch."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from hyperbagel.model.masks import CAUSAL, NOISE, Append, Attend, Packed, attend, resolve_attention
from hyperbagel.pipeline import Pipeline, SamplerSettings
from runs import launch


def _qkv(B, S, K, g):
    return (torch.randn(B, 4, S, 8, generator=g), torch.randn(B, 2, K, 8, generator=g),
            torch.randn(B, 2, K, 8, generator=g))


def _padding(B, T, g):
    """Cache validity with at least one real key per row."""
    valid = torch.rand(B, T, generator=g) > 0.3
    valid[:, :1] = True
    return valid


@pytest.mark.parametrize("within", ["full", "causal", "tree"])
@pytest.mark.parametrize(("S", "T"), [(1, 7), (5, 0), (5, 9)])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_arguments_attend_as_the_dense_rule(within, S, T, padded):
    g = torch.Generator().manual_seed(S * 31 + T)
    B, K = 3, S + T
    if within == "tree":
        parents = [-1] + [int(torch.randint(0, i, (), generator=g)) for i in range(1, S)]
        anc = torch.eye(S, dtype=torch.bool)
        for i, p in enumerate(parents):
            if p >= 0:
                anc[i] |= anc[p]
        within = anc
    keys = None
    if padded:
        keys = torch.cat([_padding(B, T, g), torch.ones(B, S, dtype=torch.bool)], dim=1)
    rule = Append(within, keys)
    q, k, v = _qkv(B, S, K, g)
    fused = attend(q, k, v, resolve_attention(rule, S, K, q.device), enable_gqa=True)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=rule.dense(S, K), enable_gqa=True)
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=1e-6)


def test_dense_rule_is_blockwise_causal_or_full_over_the_real_cache():
    keys = torch.tensor([[True, False, True, True, True]])
    causal = Append("causal", keys).dense(3, 5)[0, 0]
    assert causal.tolist() == [[True, False, True, False, False],
                               [True, False, True, True, False],
                               [True, False, True, True, True]]
    assert Append("full", keys).dense(3, 5)[0, 0].tolist() == [[True, False, True, True, True]] * 3
    with pytest.raises(ValueError, match="within"):
        Append("bidirectional")


def test_cuda_lower_right_bias_is_the_causal_rule():
    """The CUDA branch's bias (materialised here by PyTorch on the CPU) is the same rule as the dense one."""
    g = torch.Generator().manual_seed(0)
    q, k, v = _qkv(2, 4, 10, g)
    bias = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(4, 10), enable_gqa=True)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=Append("causal").dense(4, 10), enable_gqa=True)
    torch.testing.assert_close(bias, dense)
    torch.testing.assert_close(attend(q, k, v, Attend(lower_right=True), enable_gqa=True), dense)


def test_the_lower_right_rule_compiles_whole_with_dynamic_shapes():
    """Inside a compiled step (a verification over the cache on CUDA) dynamo cannot build the bias: the rule's own
    mask stands in, so the graph does not break there, for any number of new tokens and keys."""
    g = torch.Generator().manual_seed(0)

    def verify(q, k, v):
        return attend(q, k, v, Attend(lower_right=True), enable_gqa=True)

    compiled = torch.compile(verify, dynamic=True, fullgraph=True, backend="eager")
    for S, T in ((4, 10), (6, 13)):
        q, k, v = _qkv(2, S, T, g)
        dense = F.scaled_dot_product_attention(q, k, v, attn_mask=Append("causal").dense(S, T), enable_gqa=True)
        torch.testing.assert_close(compiled(q, k, v), dense)


SHARDED_LAYER = """
import os, torch, torch.distributed as dist
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29563", RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
dist.init_process_group("gloo")
from hyperbagel.model.kv_cache import KVCache
from hyperbagel.model.masks import Append, Attend
from hyperbagel.model.qwen2_mot import MoTDecoderLayer, rope_cos_sin
from hyperbagel.model.config import LLMConfig
from hyperbagel.training.sharding import ShardingConfig, shard

cfg = LLMConfig(vocab_size=16, hidden_size=64, num_layers=1, num_heads=4, num_kv_heads=2, intermediate_size=128)


class Root(torch.nn.Module):  # a model of one decoder layer, sharded as the recipes shard theirs
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([MoTDecoderLayer(cfg)])

    def forward(self, *args):
        return self.layers[0](*args)


torch.manual_seed(0)
layer = shard(Root(), ShardingConfig(param_dtype="bfloat16"))
g = torch.Generator().manual_seed(0)
context, block = torch.randn(1, 7, 64, generator=g), torch.randn(1, 3, 64, generator=g)


def run(attention):
    cache = KVCache(1)
    with torch.no_grad():
        for x, start in ((context, 0), (block, 7)):
            cos, sin = rope_cos_sin(torch.arange(start, start + x.shape[1])[None], cfg.head_dim, cfg.rope_theta,
                                    torch.float32)
            out = layer(x, None, cos, sin, Attend(causal=True) if start == 0 else attention, cache, 0, True)
    return out.float()


torch.testing.assert_close(run(Attend(lower_right=True)), run(Attend(Append("causal").dense(3, 10))))
dist.destroy_process_group()
print("same")
"""


def test_the_lower_right_bias_survives_fsdp2_input_casting():
    """CUDA's causal block over a cache, through a decoder layer sharded with bf16 parameters: FSDP2 casts the
    layer's floating inputs to bf16, which turned a ``CausalBias`` held in ``Attend`` into a plain tensor without
    its sizes (the first edit's text prefill then failed); made inside ``attend`` it attends as the dense rule."""
    assert "same" in launch(1, SHARDED_LAYER, port=0)


def test_causal_block_over_a_cache_takes_the_fused_bias_on_cuda():
    """Device choice only (no GPU needed): CUDA gets PyTorch's lower-right bias; the CPU, which has no fused kernel
    for it, one ``[1, 1, S, K]`` mask shared by the batch."""
    assert resolve_attention(Append("causal"), 4, 10, torch.device("cuda")) == Attend(lower_right=True)
    assert resolve_attention(Append("causal"), 4, 10, torch.device("cpu")).mask.shape == (1, 1, 4, 10)
    assert resolve_attention(Append("causal"), 4, 4, torch.device("cuda")) == Attend(causal=True)


def test_common_inference_forwards_build_no_per_row_mask(micro_folder):
    """In the decoder, every attention call of generation and editing with CFG (prompts of different lengths in
    one batch included) and of greedy answering (a prompt, an image block, decode steps) has no mask, a key mask
    broadcast over the queries, or (a causal text block over a cache, on the CPU) one mask shared by the batch. The
    one exception is a context's first forward when it runs deferred blocks with the block being denoised (over no
    cache yet): the text's padding must be hidden from the later block, so a batch of mixed lengths has a mask per
    row there, once per context."""
    calls = []
    real = F.scaled_dot_product_attention

    def record(q, k, v, attn_mask=None, **kw):
        calls.append((q.shape[0], None if attn_mask is None else tuple(attn_mask.shape)))
        return real(q, k, v, attn_mask=attn_mask, **kw)

    pipe = Pipeline.from_pretrained(micro_folder)
    layers = len(pipe.model.lm.layers)
    with mock.patch.object(F, "scaled_dot_product_attention", record):
        pipe.generate(["a red circle", "a large blue square"], sampler=SamplerSettings(num_timesteps=3))
        image = pipe.generate("a red circle", sampler=SamplerSettings(num_timesteps=2)).images[0]
        pipe.edit(image, "make the background gray", sampler=SamplerSettings(num_timesteps=2))
        pipe.understand(image, "what is in the image?", max_new_tokens=4)
    assert any(B > 1 for B, _ in calls), "no batched forward was recorded"
    batched = [shape for B, shape in calls if B > 1 and shape is not None and shape[-2] > 1]
    first = [shape for shape in batched if shape[-1] == shape[-2]]  # over no cache: a context's first forward
    assert batched == first, batched
    per_row = [shape for shape in first if shape[0] > 1]
    assert per_row and len(per_row) <= 2 * layers, per_row  # the mixed lengths' cond and no-image contexts


def _rule(ids: list[int], modes: list[int], q: int, k: int) -> bool:
    """The training rule, written out one pair at a time (the oracle for ``Packed``)."""
    if ids[q] < 0 or ids[k] < 0:
        return q == k
    same = ids[q] == ids[k]
    if modes[k] == NOISE and not same:
        return False
    return k <= q or (same and modes[q] != CAUSAL)


def _random_layout(g, B=3, S=14):
    ids, modes = torch.full((B, S), -1), torch.full((B, S), CAUSAL)
    for r in range(B):
        L = int(torch.randint(4, S + 1, (), generator=g))
        sizes = []
        while sum(sizes) < L:
            sizes.append(int(torch.randint(1, 5, (), generator=g)))
        pos = 0
        for b, n in enumerate(sizes):
            n = min(n, L - pos)
            ids[r, pos:pos + n] = b
            modes[r, pos:pos + n] = int(torch.randint(0, 3, (), generator=g))
            pos += n
    return Packed(ids, modes)


def test_packed_layout_is_the_training_rule():
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        packed = _random_layout(g)
        dense = packed.dense()
        B, S = packed.block_ids.shape
        ids, modes = packed.block_ids.tolist(), packed.modes.tolist()
        expected = [[[_rule(ids[r], modes[r], q, k) for k in range(S)] for q in range(S)] for r in range(B)]
        assert dense[:, 0].tolist() == expected


def test_flex_attention_attends_as_the_dense_mask(micro_folder):
    """The CUDA path (a flex-attention block mask), run eagerly here (forward only: PyTorch has no CPU backward for
    it): the same hidden states on every real token of a packed training batch."""
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.model.sequence import Text, VaeImage, VitImage, embed, pack

    model, vae = load_pretrained(micro_folder)
    px = torch.zeros(3, 64, 64)
    samples = [[Text([5, 6]), VaeImage(px, noised=True)], [VaeImage(px), VitImage(px), Text([7, 8, 9], loss=True)]]
    batch = pack(samples, model.cfg, vae, [torch.Generator().manual_seed(i) for i in range(2)])
    real = batch.mask.block_ids >= 0
    assert not real.all()  # the batch is padded
    with torch.no_grad():
        hidden = [model.lm(embed(model, batch), batch.positions, gen=batch.gen,
                           mask=Packed(batch.mask.block_ids, batch.mask.modes, flex=flex)).hidden[real]
                  for flex in (False, True)]
    torch.testing.assert_close(hidden[1], hidden[0], rtol=1e-5, atol=1e-5)


def test_compiled_block_mask_is_the_eager_one():
    """CUDA builds the block mask compiled (the rule evaluated per tile); here both ways, on the CPU, agree."""
    from torch.nn.attention.flex_attention import create_block_mask

    from hyperbagel.model.masks import _compiled

    packed = _random_layout(torch.Generator().manual_seed(5), B=2, S=16)
    rule = lambda b, h, q, k: packed.allowed(b, q, k)  # noqa: E731
    compiled = _compiled(create_block_mask)(rule, 2, None, 16, 16, device="cpu", BLOCK_SIZE=4)
    eager = create_block_mask(rule, 2, None, 16, 16, device="cpu", BLOCK_SIZE=4)
    assert torch.equal(compiled.to_dense(), eager.to_dense())
    assert not eager.to_dense().all()  # some tiles are skipped
