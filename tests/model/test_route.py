"""Expert routing: the GPU's select path gives each token its own expert's output, as the indexing path does."""

import torch
from torch import nn

from hyperbagel.model.qwen2_mot import route, route_select


def test_select_routing_matches_index_routing():
    g = torch.Generator().manual_seed(0)
    und, gen_expert = nn.Linear(8, 6), nn.Linear(8, 6)
    x = torch.randn(3, 5, 8, generator=g)
    gen = torch.rand(3, 5, generator=g) > 0.5
    torch.testing.assert_close(route_select(x, gen, und, gen_expert), route(x, gen, und, gen_expert))
    for tokens in (torch.zeros_like(gen), torch.ones_like(gen)):
        torch.testing.assert_close(route_select(x, tokens, und, gen_expert), route(x, tokens, und, gen_expert))
