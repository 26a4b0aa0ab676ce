"""Named model presets.

- ``micro``: tests and the 5-minute quickstart; 64-px Shapes World at 16 px per token, trains in seconds.
- ``tiny``: the default Shapes World teacher (64 px), deep enough that a 2-layer draft costs ≤ 15 % of a target
  decoding step, as BAGEL's ~3/28.
- ``bagel-7b``: BAGEL-7B-MoT's real dimensions (build on the meta device here).
- ``ref-tiny``: the reference BAGEL code's tiny parity configuration (``shared/fixtures/bagel-ref-tiny``).
"""

from __future__ import annotations

from hyperbagel.model.config import BagelConfig, LLMConfig, SpecialTokens, VAEConfig, ViTConfig

# Shapes World tokenizers put the four special tokens first (see model/tokenizer.py).
SHAPES_SPECIAL = SpecialTokens(bos=0, eos=1, start_of_image=2, end_of_image=3)
SHAPES_VOCAB = 256


def _micro() -> BagelConfig:
    return BagelConfig(
        llm=LLMConfig(vocab_size=SHAPES_VOCAB, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=128),
        vit=ViTConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, patch_size=16,
                      num_positions_side=4),
        vae=VAEConfig(resolution=64, ch=8, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=4, norm_groups=8),
        special_tokens=SHAPES_SPECIAL,
        max_latent_size=8,
        vit_max_num_patch_per_side=4,
        image_size=64,
    )


def _tiny() -> BagelConfig:
    # 16 layers so that a 2-layer draft costs ≤ 15 % of a target step; 16-px ViT patches (16 tokens per image) and
    # 8-px latent tokens (64 per image) keep a training step cheap on two CPU cores.
    return BagelConfig(
        llm=LLMConfig(vocab_size=SHAPES_VOCAB, hidden_size=256, num_layers=16, num_heads=8, num_kv_heads=4,
                      intermediate_size=512),
        vit=ViTConfig(hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4, patch_size=16,
                      num_positions_side=4),
        vae=VAEConfig(resolution=64, ch=16, ch_mult=(1, 2, 4), num_res_blocks=1, z_channels=4, norm_groups=8),
        special_tokens=SHAPES_SPECIAL,
        max_latent_size=16,
        vit_max_num_patch_per_side=4,
        image_size=64,
    )


def _bagel_7b() -> BagelConfig:
    return BagelConfig(
        llm=LLMConfig(vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
                      intermediate_size=18944),
        vit=ViTConfig(hidden_size=1152, intermediate_size=4304, num_layers=26, num_heads=16, patch_size=14,
                      num_positions_side=70),
        vae=VAEConfig(resolution=256, ch=128, ch_mult=(1, 2, 4, 4), num_res_blocks=2, z_channels=16),
        special_tokens=SpecialTokens(bos=151644, eos=151645, start_of_image=151652, end_of_image=151653),
        max_latent_size=64,
        vit_max_num_patch_per_side=70,
        image_size=1024,
    )


def _ref_tiny() -> BagelConfig:
    return BagelConfig(
        llm=LLMConfig(vocab_size=300, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2,
                      intermediate_size=128),
        vit=ViTConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2, patch_size=14,
                      num_positions_side=16),
        vae=VAEConfig(resolution=64, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, z_channels=16),
        special_tokens=SpecialTokens(bos=256, eos=257, start_of_image=258, end_of_image=259),
        max_latent_size=16,
        vit_max_num_patch_per_side=16,
        image_size=64,
    )


PRESETS = {"micro": _micro, "tiny": _tiny, "bagel-7b": _bagel_7b, "ref-tiny": _ref_tiny}


def preset(name: str) -> BagelConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
