"""``lookup_table``: nn.Embedding's own N(0, 1) draws off the meta device, nothing drawn on it; so a model built on
the meta device (every load) does not import ``torch._dynamo``, which torch's meta ``normal_`` does (~1.8 s)."""

import subprocess
import sys

import torch

from hyperbagel.model.embeddings import lookup_table


def test_lookup_table_draws_what_nn_embedding_draws():
    torch.manual_seed(3)
    expected = torch.nn.Embedding(7, 5).weight
    torch.manual_seed(3)
    table = lookup_table(7, 5)
    assert torch.equal(table.weight, expected) and table.weight.requires_grad
    with torch.device("meta"):
        assert lookup_table(7, 5).weight.is_meta


def test_a_model_built_on_the_meta_device_does_not_import_dynamo():
    script = ("import sys; from hyperbagel.model.checkpoint import build_model; "
              "from hyperbagel.model.presets import preset; build_model(preset('micro'), 'meta'); "
              "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
