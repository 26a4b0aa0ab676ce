"""Compiled steps (``Pipeline(compile=True)``): decode, draft and denoising steps through ``torch.compile`` give the
eager model's outputs: the same answer tokens with speculative decoding, and the same velocities."""

import torch
from torch._dynamo.utils import counters

from hyperbagel.pipeline import Pipeline, SamplerSettings


def test_compiled_steps_match_eager(micro_folder, micro_draft_folder):
    eager = Pipeline.from_pretrained(micro_folder)
    compiled = Pipeline.from_pretrained(micro_folder, compile=True)
    compiled.load_draft(micro_draft_folder)
    assert compiled.fwd.compiled
    graphs = counters["stats"]["unique_graphs"]
    image = eager.generate("a red circle", sampler=SamplerSettings(num_timesteps=2)).images[0]

    question = "what is in the image?"
    plain = eager.understand(image, question, max_new_tokens=12)
    fast = compiled.understand(image, question, max_new_tokens=12, accelerated=True)
    assert fast.texts == plain.texts
    assert counters["stats"]["unique_graphs"] > graphs  # the steps did run compiled

    from hyperbagel.model.context import Context

    ctx = Context.empty(eager.model, 1)
    eager.fwd.prefill_text(ctx, [[3, 4, 5, 6]])
    x_t = torch.randn(1, *eager.latent_ids().shape, eager.cfg.patch_latent_dim,
                      generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.7])
    with torch.no_grad():
        v_eager, _ = eager.fwd.velocity(ctx, x_t, t, eager.latent_ids())
        for _ in range(2):  # the first call compiles, the second runs the compiled graph
            v_compiled, _ = compiled.fwd.velocity(ctx, x_t, t, eager.latent_ids())
    torch.testing.assert_close(v_compiled, v_eager, rtol=1e-5, atol=1e-6)
