"""``hyperbagel train reward``: the image–text reward model ReFL trains against (Shapes World's stand-in for HPSv3).

Data (``world/tasks/match.py``): a text-to-image prompt or full caption with its scene, kept or spoiled (another
prompt, an edited scene, an unrelated scene); a share of the images damaged in pixels (erased patch, blur, noise,
colour cast) and a share sent through the generator's VAE (encoded, sampled, decoded), so the reward sees the kinds
of pictures a generator makes. With ``generators`` (model folders), a share of every batch is drawn from a pool of
their samples for training-stream prompts (built once per generator, in ``OUT/pool``): the pictures ReFL will
actually score, as HPSv3 is trained on generated images. Every label is the exact judge's verdict on the final
pixels. A step's batch is a pure function of ``(seed, step)``; the report's held-out pairs come from a separate
stream.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from hyperbagel.distill.reward import (
    REWARD_FILE,
    Reward,
    RewardModel,
    RewardModelConfig,
    load_reward,
    reward_bce,
    save_reward,
)
from hyperbagel.errors import HyperBagelError
from hyperbagel.eval.reward_eval import agreement
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.pixels import to_model_pixels, to_uint8
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.precision import bf16_autocast
from hyperbagel.recipes.checkpointing import (
    load_training_state,
)
from hyperbagel.training import checkpoint as ckpt
from hyperbagel.training.checkpoint import full_state_dict
from hyperbagel.training.distributed import all_sum, barrier, distributed, full_tensor, is_main, shard_range
from hyperbagel.training.interrupt import graceful_stop
from hyperbagel.training.progress import Progress
from hyperbagel.training.schedule import warmup_cosine
from hyperbagel.training.sharding import loss_scale, shard
from hyperbagel.world.render import render
from hyperbagel.world.tasks.match import damage, judge, prompt_and_scene, sample_pair
from hyperbagel.world.vocab import all_words

log = logging.getLogger(__name__)
TRAIN, HELD_OUT, POOL = 0, 1, 2  # data streams


@dataclass
class RewardTrainConfig:
    out: str = "runs/reward"
    vae: str | None = "runs/vae/ae.safetensors"  # the generator's autoencoder (None: rendered pixels only)
    model: dict = field(default_factory=dict)  # RewardModelConfig fields (vocab_size comes from the tokenizer)
    steps: int = 3000
    batch: int = 64
    lr: float = 1e-3  # 3e-4 leaves the loss on its prior plateau longer (measured on micro-sized runs)
    warmup: int = 100
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    resolution: int = 64
    caption_share: float = 0.4  # prompts that are full captions (as the distillation stages' mix)
    matched_share: float = 0.5  # pairs kept as drawn (the rest are spoiled; the judge labels all)
    damage_share: float = 0.3  # images damaged in pixels
    vae_share: float = 0.5  # images sent through the VAE
    seed: int = 0
    ckpt_every: int = 500
    log_every: int = 50
    report_pairs: int = 1024  # held-out corrupted renders in the report
    generators: list[str] = field(default_factory=list)  # model folders whose samples join the data (the pool)
    pool_images: int = 4096  # samples per generator, for training-stream prompts, judged
    pool_share: float = 0.5  # share of every batch drawn from the pool (when there is one)

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.steps <= 0 or self.batch <= 0:
            raise ValueError("RewardTrainConfig.steps and batch must be positive")
        self.generators = [str(g) for g in self.generators]
        if self.pool_images <= 0:
            raise ValueError("RewardTrainConfig.pool_images must be positive")
        for name in ("caption_share", "matched_share", "damage_share", "vae_share", "pool_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"RewardTrainConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        RewardModelConfig(**{**self.model, "vocab_size": 1})  # validate the model fields early

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def lr_at(cfg: RewardTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth."""
    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, 0.1)


@dataclass
class Pairs:
    images: list[np.ndarray]  # uint8 [R, R, 3], as the judge and the reward see them
    items: list[dict]
    kinds: list[str]
    labels: np.ndarray  # bool: the exact judge's verdicts

    @property
    def texts(self) -> list[str]:
        return [it["prompt"] for it in self.items]

    def __add__(self, other: Pairs) -> Pairs:
        return Pairs(self.images + other.images, self.items + other.items, self.kinds + other.kinds,
                     np.concatenate([self.labels, other.labels]))

    def take(self, rows: np.ndarray) -> Pairs:
        return Pairs([self.images[i] for i in rows], [self.items[i] for i in rows], [self.kinds[i] for i in rows],
                     self.labels[rows])


@torch.no_grad()
def through_vae(vae: AutoEncoder, images: list[np.ndarray], generator: torch.Generator) -> list[np.ndarray]:
    """Encode (sampling the posterior), decode, quantise: the pictures a generator's decoder produces."""
    if not images:
        return []
    z = vae.encode(torch.stack([to_model_pixels(im) for im in images]), generator=generator)
    return list(to_uint8(vae.decode(z)))


def make_pairs(cfg: RewardTrainConfig, stream: int, index: int, n: int, vae: AutoEncoder | None) -> Pairs:
    """``n`` labelled pairs, a pure function of ``(cfg.seed, stream, index)``."""
    seq = np.random.SeedSequence([cfg.seed, stream, index])
    rngs = [np.random.default_rng(s) for s in seq.spawn(n)]
    items, kinds, images, via_vae = [], [], [], []
    for rng in rngs:
        item, scene, kind = sample_pair(rng, cfg.resolution, cfg.caption_share, cfg.matched_share)
        image = render(scene)
        if rng.random() < cfg.damage_share:
            image = damage(rng, image)
        items.append(item)
        kinds.append(kind)
        images.append(image)
        via_vae.append(vae is not None and rng.random() < cfg.vae_share)
    rows = [i for i, v in enumerate(via_vae) if v]
    if rows:
        g = torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
        for i, im in zip(rows, through_vae(vae, [images[i] for i in rows], g)):
            images[i] = im
    labels = np.array([judge(it, im) for it, im in zip(items, images)], dtype=bool)
    return Pairs(images, items, kinds, labels)


def pool_rows(cfg: RewardTrainConfig, step: int, pool: Pairs) -> np.ndarray:
    """The pool's rows in step ``step``'s batch (none without a pool): a pure function of ``(seed, step)``."""
    if not pool.items:
        return np.zeros(0, dtype=np.int64)
    k = round(cfg.batch * cfg.pool_share)
    return np.random.default_rng([cfg.seed, POOL, step]).integers(len(pool.items), size=k)


def build_pool(cfg: RewardTrainConfig, out: Path) -> Pairs:
    """The generators' judged samples for training-stream prompts (empty without generators), each generator's
    built once into ``out/pool/INDEX.*``: adding a generator to the list does not rebuild the others."""
    pool = Pairs([], [], [], np.zeros(0, dtype=bool))
    for index, folder in enumerate(cfg.generators):
        pool = pool + pool_part(cfg, out, index, folder)
    return pool


def pool_part(cfg: RewardTrainConfig, out: Path, index: int, folder: str) -> Pairs:
    """Generator ``index``'s share of the pool, read back if built; one built with other settings is an error."""
    key = {"generator": folder, "index": index, "pool_images": cfg.pool_images, "seed": cfg.seed,
           "resolution": cfg.resolution, "caption_share": cfg.caption_share}
    images_file, items_file = out / "pool" / f"{index}.safetensors", out / "pool" / f"{index}.jsonl"
    kind = f"generated:{folder}"
    if images_file.is_file():
        with safe_open(str(images_file), "pt") as f:
            built = json.loads(f.metadata()["pool"])
            images = f.get_tensor("images").numpy()
        if built != key:
            raise HyperBagelError(f"{images_file} was built with {built}, not {key}: delete it to rebuild it")
        rows = [json.loads(line) for line in items_file.read_text().splitlines()]
        return Pairs(list(images), [r["item"] for r in rows], [kind] * len(rows),
                     np.array([r["label"] for r in rows], dtype=bool))
    t0 = time.perf_counter()
    made = generated_pairs(folder, cfg, cfg.pool_images, stream=POOL, index=index,
                           first_seed=1_000_000 * (index + 1), bf16=True)
    made.kinds = [kind] * len(made.items)
    log.info("pool: %d images from %s in %.0f s, judge pass rate %.3f", len(made.items), folder,
             time.perf_counter() - t0, made.labels.mean())
    images_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text("".join(json.dumps({"item": it, "label": bool(lab)}) + "\n"
                              for it, lab in zip(made.items, made.labels)), items_file)
    atomic_save_tensors({"images": torch.from_numpy(np.stack(made.images))}, images_file, {"pool": json.dumps(key)})
    return made


def tokenizer() -> ShapesTokenizer:
    return ShapesTokenizer.build(list(all_words()))


def build_model(cfg: RewardTrainConfig, tok: ShapesTokenizer) -> RewardModel:
    torch.manual_seed(cfg.seed)
    return RewardModel(RewardModelConfig(**{**cfg.model, "vocab_size": tok.vocab_size}))


def load_vae(cfg: RewardTrainConfig) -> AutoEncoder | None:
    if cfg.vae is None:
        return None
    from hyperbagel.recipes.vae import load_autoencoder

    vae = load_autoencoder(cfg.vae).eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    return vae


def train_reward(cfg: RewardTrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Train (or resume) the reward model; returns its folder (``reward.safetensors`` + ``tokenizer.json``).
    Under ``torchrun`` the model is sharded with FSDP2 and every process builds the step's whole batch (a pure
    function of the step) and trains on its share of the rows."""
    out = Path(cfg.out)
    tok = tokenizer()
    vae = load_vae(cfg)
    model = build_model(cfg, tok).train()
    if distributed():
        shard(model, layer_types=())
    reward = Reward(model, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    pool = build_pool(cfg, out)
    state = ckpt.resume(out / "train", {"reward": model}, {"reward": opt},
                        lambda: load_training_state(out / "train", model, None, opt))
    start, history = (state["step"], state["history"]) if state else (0, [])
    if state:
        log.info("resuming %s at step %d", out, start)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1) + "\n", out / "train_config.json")
    bar = Progress("train reward", cfg.steps, start, cfg.log_every, progress, log)
    with graceful_stop(stop_after) as stop:
        for step in range(start, cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            rows = pool_rows(cfg, step, pool)
            pairs = make_pairs(cfg, TRAIN, step, cfg.batch - len(rows), vae) + pool.take(rows)
            n = len(pairs.labels)
            mine = shard_range(n)
            pixels = torch.stack([to_model_pixels(im) for im in pairs.images[mine.start:mine.stop]])
            labels = torch.from_numpy(pairs.labels[mine.start:mine.stop])
            r = reward(pixels, pairs.texts[mine.start:mine.stop])
            loss = reward_bce(r, labels) * (len(mine) / n)  # this process's share of the batch's mean
            opt.zero_grad(set_to_none=True)
            (loss * loss_scale()).backward()
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            bce, correct = all_sum([float(loss.detach()), float(((r.detach() > 0) == labels).sum())])
            logged = {"step": step + 1, "lr": lr_at(cfg, step), "grad_norm": float(full_tensor(gnorm)), "bce": bce,
                      "acc": correct / n, "positives": float(pairs.labels.mean()),
                      **({"pool_positives": float(pool.labels[rows].mean())} if len(rows) else {})}
            history.append(logged)
            bar.step(step, {"reward/bce": bce, "reward/acc": correct / n})
            stopping = stop.due(step + 1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or stopping:
                ckpt.save(out / "train", step + 1, {"reward": model}, {"reward": opt}, {"history": history})
                _export(out, model, cfg, tok)
            if stopping:
                break
    bar.close()
    return out


def _export(out: Path, model: RewardModel, cfg: RewardTrainConfig, tok: ShapesTokenizer) -> None:
    """``reward.safetensors`` and the tokenizer (the weights gathered from every process when sharded)."""
    if not distributed():
        save_reward(out, model, tok)
        return
    tensors = full_state_dict(model)
    if is_main():
        plain = build_model(cfg, tok)
        plain.load_state_dict(tensors, strict=True)
        save_reward(out, plain, tok)
    barrier()


# ----------------------------------------------------------------------------------------------------------------
# the report


@torch.no_grad()
def score_images(reward, images: list[np.ndarray], texts: list[str], batch: int = 128) -> np.ndarray:
    out = []
    for lo in range(0, len(images), batch):
        pixels = torch.stack([to_model_pixels(im) for im in images[lo:lo + batch]])
        out.append(reward(pixels, texts[lo:lo + batch]).float().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def generated_pairs(folder: str | Path, cfg: RewardTrainConfig, n: int, batch: int = 16, stream: int = HELD_OUT,
                    index: int = 1, first_seed: int = 0, bf16: bool = False) -> Pairs:
    """``n`` images generated by the model folder (its student if it has one) for the prompts of data stream
    ``(stream, index)`` (by default the report's held-out prompts), with seeds from ``first_seed``, judged."""
    from hyperbagel.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(folder)
    seq = np.random.SeedSequence([cfg.seed, stream, index])
    items = [prompt_and_scene(np.random.default_rng(s), cfg.resolution, cfg.caption_share)[0]
             for s in seq.spawn(n)]
    images = []
    for lo in range(0, n, batch):
        chunk = items[lo:lo + batch]
        with bf16_autocast(bf16):
            images += pipe.generate([it["prompt"] for it in chunk],
                                    list(range(first_seed + lo, first_seed + lo + len(chunk)))).images
    labels = np.array([judge(it, im) for it, im in zip(items, images)], dtype=bool)
    return Pairs(images, items, ["generated"] * n, labels)


def write_report(folder: str | Path, cfg: RewardTrainConfig, models: list[str | Path], images_per_model: int
                 ) -> dict:
    """Spearman and AUC of reward against the exact judge on held-out renders and on generated images."""
    folder = Path(folder)
    if not (folder / REWARD_FILE).is_file():
        raise HyperBagelError(f"no reward model in {folder}")
    reward = load_reward(folder)
    renders = make_pairs(cfg, HELD_OUT, 0, cfg.report_pairs, load_vae(cfg))
    report: dict = {"renders": agreement(score_images(reward, renders.images, renders.texts), renders.labels,
                                         renders.kinds)}
    sources: dict = {}
    scores, labels = [], []
    for m in models:
        pairs = generated_pairs(m, cfg, images_per_model)
        s = score_images(reward, pairs.images, pairs.texts)
        sources[str(m)] = agreement(s, pairs.labels)
        scores.append(s)
        labels.append(pairs.labels)
    if models:
        report["generated"] = {**agreement(np.concatenate(scores), np.concatenate(labels)), "sources": sources}
    report["table"] = report_table(report)
    atomic_write_text(json.dumps(report, indent=1) + "\n", folder / "report.json")
    atomic_write_text(report["table"] + "\n", folder / "report.md")
    return report


def report_table(report: dict) -> str:
    lines = ["| images | n | judge pass rate | Spearman(reward, judge) | AUC | mean reward (pass / fail) |",
             "|---|---|---|---|---|---|"]

    def row(name: str, a: dict) -> str:
        return (f"| {name} | {a['n']} | {a['judge_mean']:.3f} | {a['spearman']:.3f} | {a['auc']:.3f} | "
                f"{a['reward_pass']:.2f} / {a['reward_fail']:.2f} |")

    lines.append(row("held-out renders (corrupted, damaged, VAE)", report["renders"]))
    for kind, a in report["renders"].get("by_kind", {}).items():
        lines.append(row(f"  renders: {kind}", a))
    if "generated" in report:
        lines.append(row("generated (all models)", report["generated"]))
        for name, a in report["generated"]["sources"].items():
            lines.append(row(f"  {name}", a))
    return "\n".join(lines)
