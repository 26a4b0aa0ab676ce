"""Expert routing: index maps built once per forward give each token its own expert's output, as boolean indexing
does, and no decoder layer synchronises with the host — in training, understanding, generation and speculative
verification."""

import contextlib

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from hyperbagel.model.qwen2_mot import MoTDecoderLayer, Routing, route
from hyperbagel.pipeline import Pipeline, SamplerSettings

SYNC_OPS = {"aten.nonzero", "aten._local_scalar_dense", "aten.item", "aten.masked_select", "aten.is_nonzero"}


def _boolean_route(x, gen, und_fn, gen_fn):
    out = torch.empty(*gen.shape, 6)
    out[~gen] = und_fn(x[~gen])
    out[gen] = gen_fn(x[gen])
    return out


def test_index_routing_matches_boolean_routing():
    g = torch.Generator().manual_seed(0)
    und, gen_expert = nn.Linear(8, 6), nn.Linear(8, 6)
    x = torch.randn(3, 5, 8, generator=g)
    for gen in (torch.rand(3, 5, generator=g) > 0.5, torch.ones(3, 5, dtype=torch.bool)):
        torch.testing.assert_close(route(x, Routing.of(gen), und, gen_expert), _boolean_route(x, gen, und, gen_expert),
                                   rtol=0, atol=0)
    torch.testing.assert_close(route(x, Routing.of(torch.zeros(3, 5, dtype=torch.bool)), und, gen_expert), und(x))


class _SyncsInLayers(TorchDispatchMode):
    """Counts host-synchronising ops dispatched while a decoder layer runs."""

    def __init__(self):
        super().__init__()
        self.depth, self.syncs = 0, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.depth and str(func.overloadpacket) in SYNC_OPS:
            self.syncs.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def _watch(model, whole: bool = False):
    """Records syncs inside ``model``'s decoder layers (``whole``: anywhere while the block runs)."""
    mode = _SyncsInLayers()
    mode.depth = int(whole)
    layers = [m for m in model.modules() if isinstance(m, MoTDecoderLayer)]

    def enter(*_):
        mode.depth += 1

    def leave(*_):
        mode.depth -= 1

    handles = [h for m in layers for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    try:
        with mode:
            yield mode
    finally:
        for h in handles:
            h.remove()


def test_no_host_sync_inside_the_decoder_layers_in_training(micro_folder):
    from hyperbagel.model.checkpoint import load_pretrained
    from hyperbagel.model.sequence import Text, VaeImage, VitImage, losses, pack

    model, vae = load_pretrained(micro_folder)
    px = torch.zeros(3, 64, 64)
    samples = [[Text([5, 6]), VaeImage(px, noised=True)], [VaeImage(px), VitImage(px), Text([7], loss=True)]]
    batch = pack(samples, model.cfg, vae, [torch.Generator().manual_seed(i) for i in range(2)])
    with _watch(model) as w:
        out = losses(model, batch)
        (out.ce_sum + out.mse_sum).backward()
    assert w.syncs == []


def test_no_host_sync_inside_the_decoder_layers(micro_folder, micro_draft_folder):
    pipe = Pipeline.from_pretrained(micro_folder)
    image = np.zeros((64, 64, 3), np.uint8)
    with _watch(pipe.model) as w:
        pipe.understand(image, "how many circles are there?", max_new_tokens=4)
    assert w.syncs == [], "understanding"
    with _watch(pipe.model) as w:
        pipe.generate("a red circle", seeds=0, sampler=SamplerSettings(num_timesteps=3))
    assert w.syncs == [], "generation"
    pipe.load_draft(micro_draft_folder)
    with _watch(pipe.model) as w:
        pipe.understand(image, "describe the image.", max_new_tokens=6)
    assert w.syncs == [], "speculative verification"


def test_framed_routing_is_the_vae_blocks_mask():
    gen = torch.ones(3, 7, dtype=torch.bool)
    gen[:, 0] = gen[:, -1] = False
    framed, of = Routing.framed(3, 7, torch.device("cpu")), Routing.of(gen)
    assert torch.equal(framed.und, of.und) and torch.equal(framed.gen, of.gen)


def test_a_velocity_forward_compiles_whole_and_never_syncs(micro_folder):
    """The denoising forward's routing is built by arithmetic: no sync anywhere in the forward, and a static compile
    of it needs no graph break (``Routing.of``'s ``nonzero`` once split it, with a host wait, on every step)."""
    from hyperbagel.model.context import Context

    pipe = Pipeline.from_pretrained(micro_folder)
    fwd = pipe.fwd
    ctx = Context.empty(pipe.model, 2)
    fwd.prefill_text(ctx, [[3, 4, 5], [6, 7, 8]])
    ids = pipe.latent_ids()
    x_t = torch.randn(2, *ids.shape, pipe.cfg.patch_latent_dim, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        with _watch(pipe.model, whole=True) as w:
            expected, _ = fwd.velocity(ctx, x_t, t, ids)
        assert w.syncs == []
        fwd._denoise = torch.compile(pipe.model.lm, dynamic=False, fullgraph=True, backend="eager")
        torch.testing.assert_close(fwd.velocity(ctx, x_t, t, ids)[0], expected)
