"""The draft's architecture and training-loss switches (``DraftConfig``) and the paper's Table 1 rows
(``VARIANTS``), apart from the model (``decode/draft.py``) so that naming a variant does not import torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DraftConfig:
    """The draft's architecture and the loss it is trained with; ``VARIANTS`` holds the paper's Table 1 rows."""

    fusion: Literal["attention", "fc"] = "attention"  # meta-query attention over all layers, or EAGLE-3's FC over 3
    num_queries: int = 3  # Q; the skip connection needs Q = 3
    intermediate: bool = True  # Dec, the intermediate decoder layer
    num_layers: int = 2  # N draft decoder layers
    init_from_target: bool = True  # draft layers (and Dec) start as copies of the target's top layers
    zero_init: bool = True  # zero-init the aggregation output, Dec's o_proj/down_proj, fc1, fc2
    bypass: bool = True  # identity paths around fc1 and fc2 (module docstring)
    skip_layers: tuple[int, int, int] | None = None  # low, mid, high; None = (2, L//2, L−3)
    ce_weight: float = 0.1  # loss = KL(target ‖ draft) + ce_weight · CE(target argmax)

    def __post_init__(self) -> None:
        if self.fusion not in ("attention", "fc"):
            raise ValueError(f"DraftConfig.fusion must be 'attention' or 'fc', got {self.fusion!r}")
        if self.fusion == "attention" and self.num_queries != 3:
            raise ValueError(f"DraftConfig.num_queries must be 3 (the low/mid/high skip is 3·D wide), "
                             f"got {self.num_queries}")
        if self.num_layers < 1:
            raise ValueError(f"DraftConfig.num_layers must be ≥ 1, got {self.num_layers}")
        if self.ce_weight < 0:
            raise ValueError(f"DraftConfig.ce_weight must be ≥ 0, got {self.ce_weight}")
        if self.skip_layers is not None:
            object.__setattr__(self, "skip_layers", tuple(int(i) for i in self.skip_layers))
            if len(self.skip_layers) != 3:
                raise ValueError(f"DraftConfig.skip_layers must name 3 layers, got {self.skip_layers}")

    def layers_for(self, num_target_layers: int) -> tuple[int, int, int]:
        L = num_target_layers
        skip = self.skip_layers or (min(2, L - 1), L // 2, max(L - 3, 0))
        if any(not 0 <= i < L for i in skip):
            raise ValueError(f"DraftConfig.skip_layers {skip} out of range for a {L}-layer target")
        if self.init_from_target and self.num_layers > L:
            raise ValueError(f"DraftConfig.num_layers ({self.num_layers}) exceeds the target's {L} layers")
        return skip


VARIANTS: dict[str, DraftConfig] = {
    "hyper-bagel": DraftConfig(),
    # EAGLE-3 as the paper's baseline row: FC fusion of three layers, one draft layer, KL only, default init
    "eagle3": DraftConfig(fusion="fc", intermediate=False, num_layers=1, init_from_target=False, zero_init=False,
                          bypass=False, ce_weight=0.0),
    "no-zero-init": DraftConfig(zero_init=False),
    "no-ce": DraftConfig(ce_weight=0.0),
    "no-zero-init-no-ce": DraftConfig(zero_init=False, ce_weight=0.0),
}
