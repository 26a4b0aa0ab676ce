"""Loading BAGEL's release files: configs from ``llm_config.json``/``vit_config.json``, strict weights on meta.

The fixture weights are written as a release folder (the tiny configuration's JSON configs from the manifest, the
weight files linked under their release names) and must load into exactly ``preset("ref-tiny")``; the real
BAGEL-7B-MoT configs must give ``preset("bagel-7b")``, whose meta-built model has every key and shape of the real
``ema.safetensors`` (``shared/design/bagel7b_keys.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fixtures import fixtures_dir, load_weights, manifest
from safetensors.torch import save_file

from hyperbagel.errors import HyperBagelError
from hyperbagel.model.bagel_checkpoint import (
    AE_FILE,
    LLM_CONFIG,
    MODEL_FILE,
    VIT_CONFIG,
    bagel_config,
    load_bagel_folder,
    load_bagel_weights,
)
from hyperbagel.model.checkpoint import build_model
from hyperbagel.model.config import SpecialTokens, VAEConfig
from hyperbagel.model.presets import preset

KEYS_7B = Path(__file__).resolve().parents[3] / "shared/design/bagel7b_keys.json"

# BAGEL-7B-MoT's llm_config.json and vit_config.json (the values the model uses; bagel.md §1.2–1.3, §2.1).
LLM_7B = {
    "vocab_size": 152064, "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
    "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_act": "silu", "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "rope_scaling": None, "sliding_window": 131072,
    "use_sliding_window": False, "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151645,
}
VIT_7B = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    "num_channels": 3, "image_size": 980, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6,
}


def tiny_settings() -> dict:
    """What the fixture's recording script set in code: toy token ids, the tiny autoencoder and tables, 64 px."""
    c = manifest()["config"]
    vae = c["vae"]
    return {
        "special_tokens": SpecialTokens(**{"bos": 256, "eos": 257, "start_of_image": 258, "end_of_image": 259}),
        "vae": VAEConfig(resolution=vae["resolution"], in_channels=vae["in_channels"], out_channels=vae["out_ch"],
                         ch=vae["ch"], ch_mult=tuple(vae["ch_mult"]), num_res_blocks=vae["num_res_blocks"],
                         z_channels=vae["z_channels"], scale_factor=vae["scale_factor"],
                         shift_factor=vae["shift_factor"]),
        "latent_patch_size": c["bagel"]["latent_patch_size"],
        "max_latent_size": c["bagel"]["max_latent_size"],
        "vit_max_num_patch_per_side": c["bagel"]["vit_max_num_patch_per_side"],
        "image_size": 64,
    }


def write_configs(folder: Path, llm: dict, vit: dict) -> None:
    (folder / LLM_CONFIG).write_text(json.dumps(llm))
    (folder / VIT_CONFIG).write_text(json.dumps(vit))


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    c = manifest()["config"]
    write_configs(tmp_path, c["llm"], c["vit"])
    (tmp_path / MODEL_FILE).symlink_to(fixtures_dir() / "bagel_tiny_ema.safetensors")
    (tmp_path / AE_FILE).symlink_to(fixtures_dir() / "ae_tiny.safetensors")
    return tmp_path


def test_tiny_configs_give_the_ref_tiny_preset(tiny_folder):
    cfg = bagel_config(tiny_folder / LLM_CONFIG, tiny_folder / VIT_CONFIG, **tiny_settings())
    assert cfg == preset("ref-tiny")
    assert cfg.vit.num_layers == manifest()["config"]["vit"]["num_hidden_layers"] - 1  # the loaders' "-= 1"
    assert cfg.llm.qk_norm and cfg.llm.head_dim == manifest()["config"]["head_dim"]
    assert cfg.vit.num_positions == 256 and cfg.patch_latent_dim == manifest()["config"]["patch_latent_dim"]


def test_tiny_folder_loads_every_tensor_exactly(tiny_folder):
    model, ae = load_bagel_folder(tiny_folder, **tiny_settings())
    assert model.cfg == preset("ref-tiny")
    for module, file in [(model, "bagel_tiny_ema.safetensors"), (ae, "ae_tiny.safetensors")]:
        ref = load_weights(file)
        state = module.state_dict()
        assert state.keys() == ref.keys()
        assert all(t.device.type == "cpu" and t.dtype == torch.float32 for t in state.values())
        assert all(torch.equal(state[k], ref[k]) for k in ref)
        assert not module.training
    # the fixed tables are loaded (bf16-rounded, as released), frozen, not recomputed
    assert not model.latent_pos_embed.pos_embed.requires_grad
    assert model.lm.layers[0].self_attn.q_proj.weight.requires_grad


def test_weights_load_in_bf16(tiny_folder):
    model = load_bagel_weights(preset("ref-tiny"), tiny_folder / MODEL_FILE, dtype=torch.bfloat16)
    ref = load_weights("bagel_tiny_ema.safetensors")
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(torch.equal(model.state_dict()[k].float(), ref[k]) for k in ref)  # bf16 storage: lossless


def test_strictness_names_the_offending_tensors(tiny_folder, tmp_path):
    tensors = load_weights("bagel_tiny_ema.safetensors")
    del tensors["llm2vae.bias"]
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / "bad.safetensors"))
    with pytest.raises(HyperBagelError, match=r"1 missing \(e\.g\. \['llm2vae\.bias'\]\).*extra\.weight"):
        load_bagel_weights(preset("ref-tiny"), tmp_path / "bad.safetensors")
    # a latent table side other than the checkpoint's (BAGEL's class default 32 vs the release's 64) is refused
    settings = tiny_settings() | {"max_latent_size": 8}
    with pytest.raises(HyperBagelError, match="latent_pos_embed.pos_embed: file \\(256, 64\\) vs model \\(64, 64\\)"):
        load_bagel_folder(tiny_folder, **settings)
    with pytest.raises(HyperBagelError, match="weights file not found"):
        load_bagel_weights(preset("ref-tiny"), tmp_path / "absent.safetensors")


def test_unsupported_configs_are_refused(tmp_path):
    write_configs(tmp_path, LLM_7B | {"hidden_act": "gelu"}, VIT_7B)
    with pytest.raises(HyperBagelError, match="hidden_act='gelu'"):
        bagel_config(tmp_path / LLM_CONFIG, tmp_path / VIT_CONFIG)
    write_configs(tmp_path, LLM_7B | {"rope_scaling": {"type": "yarn"}}, VIT_7B)
    with pytest.raises(HyperBagelError, match="rope_scaling"):
        bagel_config(tmp_path / LLM_CONFIG, tmp_path / VIT_CONFIG)
    write_configs(tmp_path, {k: v for k, v in LLM_7B.items() if k != "intermediate_size"}, VIT_7B)
    with pytest.raises(HyperBagelError, match="lacks 'intermediate_size'"):
        bagel_config(tmp_path / LLM_CONFIG, tmp_path / VIT_CONFIG)
    with pytest.raises(HyperBagelError, match="config file not found"):
        bagel_config(tmp_path / "absent.json", tmp_path / VIT_CONFIG)


def test_release_configs_give_the_bagel_7b_preset(tmp_path):
    write_configs(tmp_path, LLM_7B, VIT_7B)
    cfg = bagel_config(tmp_path / LLM_CONFIG, tmp_path / VIT_CONFIG)
    assert cfg == preset("bagel-7b")
    assert cfg.vit.num_layers == 26 and cfg.vit.num_positions_side == 70 and cfg.llm.head_dim == 128


def test_bagel_7b_meta_model_has_exactly_the_release_keys_and_shapes():
    if not KEYS_7B.is_file():
        pytest.skip(f"{KEYS_7B} not found")
    release = json.loads(KEYS_7B.read_text())
    model = build_model(preset("bagel-7b"), "meta")
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(ours) - set(release["keys"])) == []
    assert sorted(set(release["keys"]) - set(ours)) == []
    assert {k: s for k, s in ours.items() if s != release["keys"][k]} == {}
    assert sum(v.numel() for v in model.state_dict().values()) == release["_summary"]["params"] == 14_607_260_128
    assert all(t.device.type == "meta" for t in model.state_dict().values())  # nothing allocated
