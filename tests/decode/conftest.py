import pytest
import torch

from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.checkpoint import build_model, save_pretrained
from hyperbagel.model.presets import preset
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.recipes.teacher import init_weights
from hyperbagel.world.vocab import all_words


@pytest.fixture(scope="session")
def micro_teacher(tmp_path_factory):
    """A ``micro`` model folder with the teacher recipe's initialisation (untrained: speculative decoding must be
    exact whatever the target), its <|im_end|> logit raised so that answers end at varied lengths, as a trained
    model's do (some after one token, some mid-run, some not within the budget)."""
    folder = tmp_path_factory.mktemp("micro-teacher")
    cfg = preset("micro")
    torch.manual_seed(0)
    model = build_model(cfg)
    init_weights(model, 0.02, torch.Generator().manual_seed(0))
    with torch.no_grad():
        eos = cfg.special_tokens.eos
        model.language_model.lm_head.weight[eos] += 0.07 * torch.randn(cfg.llm.hidden_size,
                                                                       generator=torch.Generator().manual_seed(1))
    save_pretrained(folder, model, AutoEncoder(cfg.vae), {"tokenizer.json": ShapesTokenizer.build(
        list(all_words())).to_json()})
    return folder
