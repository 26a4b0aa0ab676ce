"""Stage 5, ReFL (Hyper-Bagel §3.2.5): reward feedback learning of the 1-step model from the ADP stage.

Roles: ``generator`` = the 1-step student, from stage 4; ``reward`` = the image–text reward model
(``hyperbagel train reward``), frozen; ``anchor`` = the stage-4 model, frozen, only when ``anchor_weight > 0``.
Each step, per task group: the generator's one forward from pure noise gives ``x̂_0``; the VAE decodes it (with
gradient); the reward scores the picture against the prompt (text-to-image) or the target scene's caption (edit);
the loss is ``ReLU(α − r)`` (``distill/refl.py``).

Reward hacking shows as a reward that climbs while the exact judge does not: every logged step carries both, on the
training batch and, at each checkpoint, on a fixed probe set of held-out prompts and edits (``probe/…``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from hyperbagel.distill.refl import refl_objective
from hyperbagel.distill.reward import HardenedReward, load_reward
from hyperbagel.flow.schedule import x0_from_velocity
from hyperbagel.model.pixels import to_uint8
from hyperbagel.model.student import generation_params
from hyperbagel.recipes.distill_adp import decode_pixels
from hyperbagel.recipes.distill_common import (
    GROUPS,
    DistillConfig,
    Runner,
    autocast,
    backward_share,
    conditions,
    distribute,
    group_mean,
    load_setup,
    new_student,
    student_info,
)
from hyperbagel.recipes.distill_loop import StageLoop
from hyperbagel.training.distributed import full_tensor
from hyperbagel.world.captions import caption
from hyperbagel.world.scene import scene_from_json
from hyperbagel.world.tasks import edit as edit_tasks
from hyperbagel.world.tasks.match import judge as t2i_judge

log = logging.getLogger(__name__)
PROBE_SUB = 10_000  # the probe set's data stream (training draws sub 0)


@dataclass
class ReFLConfig(DistillConfig):
    init: str | None = "runs/distill-adp"
    out: str = "runs/distill-refl"
    reward: str = "runs/reward"  # the reward model's folder
    # a harder reward to hack (distill/reward.py, HardenedReward): more reward folders, each trained on its own seed,
    # combined with ``reward`` by their min or mean; and the mean over ``views`` random shifts of up to ``max_shift``
    # pixels of each image. Off by default: one model, no shift
    ensemble: list[str] = dataclasses.field(default_factory=list)
    combine: str = "min"
    views: int = 1
    max_shift: int = 0
    steps: int = 200
    lr: float = 1e-5
    alpha: float = 3.0  # the reward threshold (the reward's logit: σ(3) ≈ 0.95); no gradient above it
    anchor_weight: float = 0.0  # > 0: MSE to the ADP model's sample from the same noise (Hyper-Bagel uses none)
    probe: int = 32  # held-out rows per group scored by reward and judge at each checkpoint (0: none)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.init is None:
            raise ValueError("ReFLConfig.init must be the 1-step (adp) folder")
        if self.anchor_weight < 0 or self.probe < 0:
            raise ValueError("ReFLConfig.anchor_weight and probe must be non-negative")
        HardenedReward.check(self.combine, self.views, self.max_shift)


def reward_texts(c) -> list[str]:
    """What the reward reads per row: the prompt (text-to-image) or the caption of the edit's target scene."""
    if c.group == "gen":
        return [it["prompt"] for it in c.items]
    return [caption(scene_from_json(it["target"])) for it in c.items]


def judge_rows(c, images: list[np.ndarray]) -> np.ndarray:
    """The exact judge per row: GenEval-style verdict (text-to-image), GEdit-style overall score (edit)."""
    if c.group == "gen":
        return np.array([float(t2i_judge(it, im)) for it, im in zip(c.items, images)])
    return np.array([edit_tasks.check_edit(it, im).o for it, im in zip(c.items, images)])


def one_step(setup, fwd: Runner, c) -> Tensor:
    """The 1-step sample ``x̂_0 = x_T − v(x_T, 1)`` (with gradient when enabled)."""
    t = torch.ones(c.batch, device=c.device)
    v, _ = fwd.velocity(c.branches.cond, c.noise, t, setup.ids, **c.scales(t))
    return x0_from_velocity(c.noise, v.float(), t)


def step_loss(setup, roles, cfg: ReFLConfig, step: int, group: str) -> dict[str, float]:
    c = conditions(setup, cfg, step, group)
    with autocast(cfg):
        x0_hat = one_step(setup, roles["generator"], c)
        pixels = decode_pixels(setup.pipe, x0_hat).float().clamp(-1, 1)
    anchor = None
    if "anchor" in roles:
        with torch.no_grad(), autocast(cfg):
            anchor = one_step(setup, roles["anchor"], c)
    rewards = roles["reward"](pixels, reward_texts(c), c.generators)  # each row's shifts from its own generator
    loss, hinge, anchor_mse = refl_objective(rewards, cfg.alpha, x0_hat, anchor, cfg.anchor_weight)
    backward_share(loss, c, cfg)
    judged = judge_rows(c, list(to_uint8(pixels)))
    return group_mean({f"{group}/refl": float(hinge.detach()), f"{group}/anchor_mse": float(anchor_mse.detach()),
                       f"{group}/reward": float(rewards.detach().mean()), f"{group}/judge": float(judged.mean())}, c)


@torch.no_grad()
def probe(setup, roles, cfg: ReFLConfig) -> dict[str, float]:
    """Mean reward and exact judge of the current generator on the fixed probe rows (the same at every call)."""
    out = {}
    for group in GROUPS:
        if not cfg.batch.get(group, 0):
            continue
        pcfg = dataclasses.replace(cfg, batch={group: cfg.probe})
        c = conditions(setup, pcfg, 0, group, sub=PROBE_SUB)
        with autocast(cfg):
            pixels = decode_pixels(setup.pipe, one_step(setup, roles["generator"], c)).float().clamp(-1, 1)
        out.update(group_mean({f"probe/{group}_reward": float(roles["reward"](pixels, reward_texts(c)).mean()),
                               f"probe/{group}_judge": float(judge_rows(c, list(to_uint8(pixels))).mean())}, c))
    return out


def train_refl(cfg: ReFLConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) stage 5 from the 1-step folder ``cfg.init``; returns the model folder."""
    setup = load_setup(cfg)
    torch.manual_seed(cfg.seed)
    reward = HardenedReward([load_reward(f) for f in (cfg.reward, *cfg.ensemble)], cfg.combine, cfg.views,
                            cfg.max_shift)
    for model in reward.models:
        model.to(cfg.device)
    roles = {"generator": Runner(new_student(setup, cfg.init)), "reward": reward}
    if cfg.anchor_weight > 0:
        roles["anchor"] = Runner(new_student(setup, cfg.init, trainable=False))
    distribute(setup, cfg, roles["generator"], *reward.models, *([roles["anchor"]] if "anchor" in roles else []))
    params = generation_params(roles["generator"].model)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    loop = StageLoop("refl", cfg, setup, {"generator": roles["generator"]}, {"generator": opt})
    probes = loop.state["probes"] if loop.state else []
    if not loop.state and cfg.probe:
        probes.append({"step": 0, **probe(setup, roles, cfg)})  # the ADP model, before any feedback
        log.info("refl probe before training: %s", probes[-1])

    def train_step(step: int) -> dict[str, float]:
        logged = {}
        for group in cfg.groups:
            logged.update(step_loss(setup, roles, cfg, step, group))
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        return {"grad_norm": float(full_tensor(gnorm)), **logged}

    def checkpoint_state(done: int) -> dict:
        if cfg.probe:
            probes.append({"step": done, **probe(setup, roles, cfg)})
            log.info("refl probe at step %d: %s", done, probes[-1])
        return {"probes": probes}

    info = student_info(cfg, setup, "refl", steps=1)
    return loop.run(train_step, roles["generator"], info, progress, stop_after, checkpoint_state)
