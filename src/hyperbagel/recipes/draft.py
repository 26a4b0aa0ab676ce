"""Training the speculative-decoding draft (Hyper-Bagel §3.1, EAGLE-3's training-time test).

Two phases, both resumable:

1. Data (``build_data``). Training prompts with their images in context, in four kinds: VQA questions and
   descriptions ``[ViT, question]``, think plans ``[prompt]``, and questions asked after a generation or an edit,
   whose context also holds the clean latents ``[VAE, ViT, question]``. The target answers each greedily (the draft
   learns the target's own outputs, as EAGLE-3 and the paper do); then one target forward over
   ``[context, answer]`` gives the hidden states after every layer at every position. Each chunk of samples is
   written once (``chunk-NNNNN.json``: prompts and answers; ``chunk-NNNNN.safetensors``: per sample the states
   ``[S, L, D]`` in fp16, token ids with −1 for image tokens, RoPE positions and the answer positions), so the target
   never runs again while the draft trains, and every ablation variant reads the same data.
2. Training (``train_draft``). Each step draws a batch (a pure function of ``(seed, step)``) and unrolls the draft
   ``k`` steps on its own outputs (training-time test): step 0 reads the target features of every row; step ``j``
   feeds row ``i`` the draft's step ``j−1`` output and the token ``t[i+1+j]``, at position ``pos[i] + j``, attending
   to step-0 keys of rows ``≤ i`` and to its own row's keys of steps ``1..j`` — exactly the keys it sees when drafting
   ``j`` tokens ahead. The loss of step ``j`` (weight ``0.8^j``) is ``KL(p_target ‖ p_draft) + λ·CE(argmax
   p_target)`` at the answer positions (λ from the variant), with ``p_target`` the target's distribution for the same
   token. Each step's KL and CE are sums over the answer positions divided by their count over every process, so
   that under ``torchrun`` each process trains on its share of the batch's rows (the draft sharded with FSDP2, the
   target's embedding and head replicated and frozen) and the step is the one-process step. AdamW, warm-up +
   cosine, gradient clipping; distributed checkpoints and exact resume as the teacher's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor, nn

from hyperbagel.decode.draft import Draft, TargetHead, build_draft, save_draft
from hyperbagel.decode.draft_config import VARIANTS, DraftConfig
from hyperbagel.decode.generate import generate_text
from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.context import Context, Forwarder
from hyperbagel.model.latents import patchify_latents
from hyperbagel.model.pixels import to_model_pixels
from hyperbagel.model.sequence import IGNORE, Block, Text, VaeImage, VitImage, embed, pack
from hyperbagel.model.siglip import patchify_image, vit_position_ids
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.precision import bf16_autocast
from hyperbagel.pretrained import DEFAULT_MODEL, resolve
from hyperbagel.recipes.checkpointing import load_training_state
from hyperbagel.training import checkpoint as ckpt
from hyperbagel.training.distributed import all_sum, barrier, distributed, full_tensor, is_main, shard_range, world
from hyperbagel.training.interrupt import graceful_stop
from hyperbagel.training.progress import Progress
from hyperbagel.training.schedule import warmup_cosine
from hyperbagel.training.sharding import ShardingConfig, loss_scale, shard
from hyperbagel.world.captions import caption
from hyperbagel.world.render import render
from hyperbagel.world.scene import sample_scene, scene_from_json
from hyperbagel.world.tasks import t2i, vqa

log = logging.getLogger(__name__)
KINDS = ("vqa", "describe", "think", "interleaved")
DATA_FORMAT = 2  # bumped when the files change: older folders are refused, not misread


@dataclass(frozen=True)
class DraftDataConfig:
    samples: int = 8192
    chunk_size: int = 256
    mix: dict[str, float] = field(default_factory=lambda: {"vqa": 0.35, "describe": 0.25, "think": 0.25,
                                                           "interleaved": 0.15})
    caption_prompts: float = 0.4  # of think prompts, the share that are full captions (as the teacher trains)
    max_new_tokens: int = 80
    batch: int = 32  # sequences per target call while building
    seed: int = 0

    def __post_init__(self) -> None:
        if self.samples <= 0 or self.chunk_size <= 0:
            raise ValueError("DraftDataConfig.samples and chunk_size must be positive")
        unknown = set(self.mix) - set(KINDS)
        if unknown or not self.mix or min(self.mix.values()) < 0 or sum(self.mix.values()) <= 0:
            raise ValueError(f"DraftDataConfig.mix must weigh some of {KINDS}, got {self.mix}")

    @property
    def chunks(self) -> int:
        return math.ceil(self.samples / self.chunk_size)


@dataclass
class DraftTrainConfig:
    target: str = DEFAULT_MODEL  # a model folder, or a shipped model's name
    out: str = "runs/draft"
    data_dir: str = "runs/draft-data"
    variant: str = "hyper-bagel"
    draft: dict = field(default_factory=dict)  # DraftConfig overrides on top of the variant
    data: DraftDataConfig = field(default_factory=DraftDataConfig)
    steps: int = 2000
    batch: int = 16
    lr: float = 5e-4
    min_lr_ratio: float = 0.1
    warmup: int = 100
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    grad_clip: float = 0.5
    ttt_steps: int = 5  # k
    step_decay: float = 0.8  # loss weight of step j: decay^j
    bf16: bool = True  # CPU autocast for the draft (about 2× faster on two cores; fp32 without native bf16)
    seed: int = 0
    ckpt_every: int = 200
    log_every: int = 50
    sharding: ShardingConfig = field(default_factory=ShardingConfig)  # under torchrun (docs/scale.md)

    def __post_init__(self) -> None:
        if isinstance(self.data, dict):
            self.data = DraftDataConfig(**self.data)
        if isinstance(self.sharding, dict):
            self.sharding = ShardingConfig(**self.sharding)
        self.betas = tuple(self.betas)
        if self.variant not in VARIANTS:
            raise ValueError(f"DraftTrainConfig.variant must be one of {sorted(VARIANTS)}, got {self.variant!r}")
        for name in ("steps", "batch", "ttt_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DraftTrainConfig.{name} must be positive, got {getattr(self, name)}")
        self.draft_config()

    def draft_config(self) -> DraftConfig:
        try:
            return dataclasses.replace(VARIANTS[self.variant], **self.draft)
        except TypeError as err:
            raise ValueError(f"DraftTrainConfig.draft: {err}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----- data -----
def _sample_rng(cfg: DraftDataConfig, index: int) -> tuple[np.random.Generator, int]:
    seq = np.random.SeedSequence([cfg.seed, index])
    return np.random.default_rng(seq), int(seq.generate_state(1, np.uint64)[0] >> 1)


def sample_spec(cfg: DraftDataConfig, index: int, resolution: int) -> dict:
    """The prompt of sample ``index`` (a pure function of the data seed and the index)."""
    rng, torch_seed = _sample_rng(cfg, index)
    kinds = [k for k in KINDS if cfg.mix.get(k, 0) > 0]
    weights = np.array([cfg.mix[k] for k in kinds], dtype=float)
    kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
    spec = {"index": index, "kind": kind, "seed": torch_seed}
    if kind == "think":
        if rng.random() < cfg.caption_prompts:
            spec["question"] = caption(sample_scene(rng, resolution))
        else:
            spec["question"] = t2i.sample_prompt(rng)["prompt"]
        return spec
    if kind == "describe" or (kind == "interleaved" and rng.random() < 0.3):
        item = vqa.sample_description(rng, resolution)
    else:
        item = vqa.sample_question(rng, vqa.TEMPLATES[rng.integers(len(vqa.TEMPLATES))], resolution=resolution)
    spec["question"], spec["scene"] = item["question"], item["scene"]
    return spec


def _pixels(spec: dict) -> Tensor:
    return to_model_pixels(render(scene_from_json(spec["scene"])))


def blocks_for(spec: dict, tok: ShapesTokenizer, answer: list[int] | None) -> list[Block]:
    """The training sequence of a sample: its context, then the answer block (with loss) when given."""
    blocks: list[Block] = []
    if spec["kind"] != "think":
        px = _pixels(spec)
        if spec["kind"] == "interleaved":
            blocks.append(VaeImage(px))
        blocks.append(VitImage(px))
    blocks.append(Text(tok.encode(spec["question"])))
    if answer is not None:
        blocks.append(Text(list(answer), loss=True))
    return blocks


def _context(fwd: Forwarder, vae, specs: list[dict], tok: ShapesTokenizer) -> Context:
    """The inference context of same-kind samples (as the pipeline builds it; clean latents sampled from the VAE
    posterior with each sample's own generator, exactly as ``pack`` samples them)."""
    model, kind = fwd.model, specs[0]["kind"]
    cfg = model.cfg
    ctx = Context.empty(model, len(specs))
    if kind != "think":
        pixels = torch.stack([_pixels(s) for s in specs])
        if kind == "interleaved":
            generators = [torch.Generator().manual_seed(s["seed"]) for s in specs]
            side = cfg.image_size // cfg.latent_downsample
            latents = patchify_latents(vae.encode_rows(pixels, generators), cfg.latent_patch_size)
            fwd.prefill_vae(ctx, latents, vit_position_ids(side, side, cfg.max_latent_size))
        p = cfg.vit.patch_size
        tokens = torch.stack([patchify_image(px, p) for px in pixels])
        h, w = pixels.shape[2] // p, pixels.shape[3] // p
        fwd.prefill_vit(ctx, tokens, vit_position_ids(h, w, cfg.vit_max_num_patch_per_side))
    fwd.prefill_text(ctx, [[tok.bos, *tok.encode(s["question"]), tok.eos] for s in specs])
    return ctx


def _sequence_tensors(model: Bagel, vae, specs: list[dict], answers: list[list[int]], tok) -> list[dict]:
    """One target forward over ``[context, answer]`` per sample: states ``[S, L, D]`` (fp16), ids (−1 at image
    tokens), positions and the answer positions (where the target predicts an answer token or <|im_end|>)."""
    samples = [blocks_for(s, tok, a) for s, a in zip(specs, answers)]
    batch = pack(samples, model.cfg, vae, [torch.Generator().manual_seed(s["seed"]) for s in specs])
    out = model.lm(embed(model, batch), batch.positions, gen=batch.gen, mask=batch.mask, return_layer_states=True)
    states = torch.stack(out.layer_states, dim=2)
    ids = batch.text_ids.clone().flatten()
    for index in (batch.vit_index, batch.vae_index):
        if index is not None:
            ids[index] = -1
    ids = ids.view_as(batch.text_ids)
    rows = []
    for b, blocks in enumerate(samples):
        S = sum(_block_length(x, model) for x in blocks)
        rows.append({"states": states[b, :S].to(torch.float16), "ids": ids[b, :S],
                     "positions": batch.positions[b, :S], "answer": (batch.labels[b, :S] != IGNORE).to(torch.uint8)})
    return rows


def _block_length(block: Block, model: Bagel) -> int:
    if isinstance(block, Text):
        return len(block.ids) + 2
    f = model.cfg.vit.patch_size if isinstance(block, VitImage) else model.cfg.latent_downsample
    return (block.pixels.shape[1] // f) * (block.pixels.shape[2] // f) + 2


def _chunk_paths(folder: Path, c: int) -> tuple[Path, Path]:
    return folder / f"chunk-{c:05d}.json", folder / f"chunk-{c:05d}.safetensors"


def data_fingerprint(cfg: DraftDataConfig, head: TargetHead) -> str:
    text = json.dumps({"data": dataclasses.asdict(cfg), "target": head.fingerprint(), "format": DATA_FORMAT},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@torch.no_grad()
def build_data(cfg: DraftDataConfig, target: str | Path, folder: str | Path, progress: bool = True) -> Path:
    """Write the chunks that are missing (resumable; a folder built for another target or config is refused)."""
    folder = Path(folder)
    model, vae = load_pretrained(target)
    tok = ShapesTokenizer.load(resolve(target) / "tokenizer.json")
    fwd = Forwarder(model)
    fp = data_fingerprint(cfg, TargetHead.of(model))
    meta_path = folder / "data.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != fp:
            raise HyperBagelError(f"{folder} holds draft data of another target or data config; use another folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"fingerprint": fp, "target": str(target), "config": dataclasses.asdict(cfg)},
                                 indent=1) + "\n", meta_path)
    missing = [c for c in range(cfg.chunks) if not _chunk_paths(folder, c)[0].is_file()]
    bar = None
    if progress and missing:
        from tqdm import tqdm

        bar = tqdm(total=len(missing) * cfg.chunk_size, desc="draft data", unit="sample", dynamic_ncols=True)
    for c in missing:
        first = c * cfg.chunk_size
        specs = [sample_spec(cfg, i, model.cfg.image_size) for i in range(first, min(first + cfg.chunk_size,
                                                                                     cfg.samples))]
        tensors, answers = {}, {}
        for kind in KINDS:
            group = [s for s in specs if s["kind"] == kind]
            for lo in range(0, len(group), cfg.batch):
                part = group[lo: lo + cfg.batch]
                res = generate_text(fwd, _context(fwd, vae, part, tok), cfg.max_new_tokens)
                rows = _sequence_tensors(model, vae, part, res.tokens, tok)
                for s, ans, stopped, row in zip(part, res.tokens, res.stopped, rows):
                    answers[s["index"]] = {"answer": ans, "stopped": stopped, "length": row["ids"].shape[0]}
                    for name, t in row.items():
                        tensors[f"{s['index']}.{name}"] = t
                if bar is not None:
                    bar.update(len(part))
        json_path, st_path = _chunk_paths(folder, c)
        atomic_save_tensors(tensors, st_path)
        records = [{**s, **answers[s["index"]]} for s in specs]
        atomic_write_text(json.dumps(records) + "\n", json_path)  # written last: marks the chunk complete
    if bar is not None:
        bar.close()
    return folder


class DraftData:
    """Random access to the built samples (states are read from disk per sample)."""

    def __init__(self, folder: str | Path, cfg: DraftDataConfig, head: TargetHead):
        self.folder, self.cfg = Path(folder), cfg
        meta_path = self.folder / "data.json"
        if not meta_path.is_file() or json.loads(meta_path.read_text()).get("fingerprint") != data_fingerprint(
                cfg, head):
            raise HyperBagelError(f"{folder} has no draft data for this target and data config; build it first")
        for c in range(cfg.chunks):
            if not _chunk_paths(self.folder, c)[0].is_file():
                raise HyperBagelError(f"{folder} is incomplete (chunk {c} missing); build it first")
        self._handles: dict[int, object] = {}

    def __len__(self) -> int:
        return self.cfg.samples

    def lengths(self) -> np.ndarray:
        """Sequence length of every sample."""
        return np.array([r["length"] for c in range(self.cfg.chunks) for r in self.records(c)])

    def records(self, c: int) -> list[dict]:
        return json.loads(_chunk_paths(self.folder, c)[0].read_text())

    def get(self, index: int) -> dict[str, Tensor]:
        c = index // self.cfg.chunk_size
        if c not in self._handles:
            self._handles[c] = safe_open(str(_chunk_paths(self.folder, c)[1]), framework="pt")
        f = self._handles[c]
        return {name: f.get_tensor(f"{index}.{name}") for name in ("states", "ids", "positions", "answer")}


@dataclass
class DraftBatch:
    states: Tensor  # [B, S, L, D] fp32
    ids: Tensor  # [B, S] (−1: image tokens and padding)
    positions: Tensor  # [B, S]
    valid: Tensor  # [B, S] bool
    answer: Tensor  # [B, S] bool: the target predicts an answer token (or <|im_end|>) at this position


def collate(rows: list[dict[str, Tensor]]) -> DraftBatch:
    B, S = len(rows), max(r["ids"].shape[0] for r in rows)
    L, D = rows[0]["states"].shape[1:]
    states = torch.zeros(B, S, L, D)
    ids = torch.full((B, S), -1, dtype=torch.long)
    positions = torch.zeros(B, S, dtype=torch.long)
    valid = torch.zeros(B, S, dtype=torch.bool)
    answer = torch.zeros(B, S, dtype=torch.bool)
    for b, r in enumerate(rows):
        n = r["ids"].shape[0]
        states[b, :n] = r["states"].float()
        ids[b, :n], positions[b, :n], valid[b, :n], answer[b, :n] = r["ids"], r["positions"], True, r["answer"] > 0
    return DraftBatch(states, ids, positions, valid, answer)


# ----- training-time test -----
@dataclass
class TTTLoss:
    loss: Tensor  # this process's share of the step's loss (its sums over the global counts)
    value: float  # the step's loss over every process
    kl: list[float]  # per step, means over the answer positions of every process
    ce: list[float]
    acc: list[float]  # draft argmax == target argmax, per step


def ttt_loss(draft: Draft, head: TargetHead, batch: DraftBatch, steps: int, decay: float, ce_weight: float
             ) -> TTTLoss:
    """The unrolled draft loss over ``steps`` draft steps (module docstring). ``batch`` is this process's share of
    the rows; each step's KL and CE are normalised by its answer positions over every process (a collective)."""
    B, S = batch.ids.shape
    device = batch.ids.device
    with torch.no_grad():
        target_logp = torch.log_softmax(head.logits(batch.states[:, :, -1]).float(), -1)  # [B, S, V]
    # step 0 over every row: causal over valid rows
    causal = torch.ones(S, S, dtype=torch.bool, device=device).tril()
    mask0 = (causal[None] & batch.valid[:, None, :])[:, None]
    next_ids = torch.cat([batch.ids[:, 1:], torch.full_like(batch.ids[:, :1], -1)], dim=1)
    dec_cache, cache = draft.new_caches()
    feature = draft.features(batch.states, batch.positions, mask0, dec_cache)
    out = draft(feature, head.embed(next_ids), batch.positions, mask0, cache)
    # the window of rows some step needs: from k rows before the first answer position to the end
    length = batch.valid.sum(1)
    first = torch.where(batch.answer.any(1), batch.answer.float().argmax(1), length)
    start = (first - steps).clamp_min(0)
    W = int((length - 1 - start).clamp_min(1).max())
    rows = (start[:, None] + torch.arange(W, device=device)).clamp_max(S - 1)  # [B, W]
    bidx = torch.arange(B, device=device)[:, None]
    in_seq = start[:, None] + torch.arange(W, device=device) < (length - 1)[:, None]
    # the positions scored at each step (data only), and their counts over every process
    targets = [rows + 1 + j for j in range(steps)]
    scored = [in_seq & (t < S) & batch.answer[bidx, t.clamp_max(S - 1)] for t in targets]
    counts = all_sum([float(ok.sum()) for ok in scored])
    out = out[bidx, rows]  # [B, W, D]
    eye = torch.eye(W, dtype=torch.bool, device=device).expand(B, W, W)
    step_mask = [mask0[:, 0][bidx, rows]]  # step-0 keys visible to each window row [B, W, S]
    total = out.new_zeros(())
    done, parts = [], []  # the scored steps; per step, KL, CE and agreement summed over this process's positions
    for j in range(steps):
        if j > 0:
            tok_at = (rows + 1 + j).clamp_max(S - 1)
            ids_j = torch.where(rows + 1 + j < S, batch.ids[bidx, tok_at], -1)
            step_mask.append(eye)
            mask = torch.cat(step_mask, dim=2)[:, None]
            out = draft(out, head.embed(ids_j), batch.positions[bidx, rows] + j, mask, cache)
        ok = scored[j]
        if not counts[j]:
            continue
        logp = torch.log_softmax(head.logits(out[ok]).float(), -1)
        t = target_logp[bidx.expand_as(rows)[ok], targets[j][ok]]
        kl = (t.exp() * (t - logp)).sum()
        best = t.argmax(-1)
        ce = F.nll_loss(logp, best, reduction="sum")
        total = total + decay**j * (kl + ce_weight * ce) / counts[j]
        done.append(j)
        parts += [float(kl.detach()), float(ce.detach()), float((logp.argmax(-1) == best).float().sum())]
    value, *parts = all_sum([float(total.detach()), *parts])
    kl, ce, acc = ([parts[3 * i + f] / counts[j] for i, j in enumerate(done)] for f in range(3))
    return TTTLoss(total, value, kl, ce, acc)


class DraftLoss(nn.Module):
    """The draft's training forward as one module call: the entry point through which FSDP2 gathers the draft
    (``training/sharding.py``); the target's embedding and head stay outside, frozen."""

    def __init__(self, draft: Draft, head: TargetHead):
        super().__init__()
        self.draft, self.head = draft, head

    def forward(self, batch: DraftBatch, steps: int, decay: float, ce_weight: float) -> TTTLoss:
        return ttt_loss(self.draft, self.head, batch, steps, decay, ce_weight)


# ----- the loop -----
def lr_at(cfg: DraftTrainConfig, step: int) -> float:
    return warmup_cosine(step, cfg.lr, cfg.warmup, cfg.steps, cfg.min_lr_ratio)


POOL = 16  # batches whose samples are sorted by length together


def epoch_batches(cfg: DraftTrainConfig, epoch: int, lengths: np.ndarray) -> list[list[int]]:
    """The batches of an epoch, a pure function of ``(seed, epoch)``: shuffle, cut into pools of ``POOL`` batches,
    sort each pool by sequence length (so that a batch pads little), cut it into batches and shuffle those."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, epoch]))
    perm, B = rng.permutation(len(lengths)), cfg.batch
    batches = []
    for lo in range(0, len(perm), POOL * B):
        pool = perm[lo: lo + POOL * B]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        group = [pool[i: i + B].tolist() for i in range(0, len(pool) - B + 1, B)]
        batches += [group[i] for i in rng.permutation(len(group))]
    return batches


def train_draft(cfg: DraftTrainConfig, progress: bool = True, stop_after: int | None = None) -> Path:
    """Build the data if needed, then train (or resume) the draft; returns the draft folder (``draft.safetensors``,
    ``draft.json``, ``train/``). ``stop_after`` ends the call after that many total steps with a checkpoint. Under
    ``torchrun`` the data is built by the main process, and each process trains on its share of every batch."""
    out = Path(cfg.out)
    if is_main():
        build_data(cfg.data, cfg.target, cfg.data_dir, progress)
    barrier()
    model, _ = load_pretrained(cfg.target)
    for p in model.parameters():
        p.requires_grad_(False)
    head = TargetHead.of(model)
    data = DraftData(cfg.data_dir, cfg.data, head)
    lengths = data.lengths()
    per_epoch, epochs = len(epoch_batches(cfg, 0, lengths)), {}
    if per_epoch == 0:
        raise HyperBagelError(f"{cfg.data.samples} samples do not fill a batch of {cfg.batch}")
    if cfg.batch < world()[1]:
        raise HyperBagelError(f"DraftTrainConfig.batch {cfg.batch} is smaller than the {world()[1]} processes")
    dcfg = cfg.draft_config()
    forward = DraftLoss(build_draft(dcfg, model, cfg.seed).train(), head)
    del model  # the draft trains against the stored states: of the target only the embedding and head stay
    if distributed():
        shard(forward, cfg.sharding)
    params = [p for p in forward.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    state = ckpt.resume(out / "train", {"draft": forward}, {"draft": opt},
                        lambda: load_training_state(out / "train", forward.draft, None, opt))
    start = state["step"] if state else 0
    history = state["history"] if state else []
    if state:
        log.info("resuming %s at step %d", out, start)
    if is_main():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps(cfg.to_dict(), indent=1, default=list) + "\n", out / "train_config.json")
    bar = Progress(f"draft {cfg.variant}", cfg.steps, start, cfg.log_every, progress, log)
    with graceful_stop(stop_after) as stop:
        for step in range(start, cfg.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            epoch, slot = divmod(step, per_epoch)
            if epoch not in epochs:
                epochs.clear()
                epochs[epoch] = epoch_batches(cfg, epoch, lengths)
            rows = epochs[epoch][slot]
            batch = collate([data.get(rows[i]) for i in shard_range(len(rows))])
            opt.zero_grad(set_to_none=True)
            with bf16_autocast(cfg.bf16):
                res = forward(batch, cfg.ttt_steps, cfg.step_decay, dcfg.ce_weight)
            (res.loss * loss_scale()).backward()
            gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            logged = {"step": step + 1, "lr": lr_at(cfg, step), "loss": res.value,
                      "grad_norm": float(full_tensor(gnorm)), "kl": res.kl, "ce": res.ce, "acc": res.acc}
            history.append(logged)
            bar.step(step, {"draft/loss": res.value, **({"draft/acc0": res.acc[0]} if res.acc else {})})
            stopping = stop.due(step + 1)
            if (step + 1) % cfg.ckpt_every == 0 or step + 1 == cfg.steps or stopping:
                ckpt.save(out / "train", step + 1, {"draft": forward}, {"draft": opt}, {"history": history})
                _export(out, forward, head)
            if stopping:
                break
    bar.close()
    return out


def _export(out: Path, forward: DraftLoss, head: TargetHead) -> None:
    """``draft.safetensors`` and ``draft.json`` (the weights gathered from every process when sharded)."""
    if not distributed():
        save_draft(out, forward.draft, head)
        return
    tensors = ckpt.full_state_dict(forward)
    if is_main():
        plain = Draft(forward.draft.cfg, forward.draft.llm)
        plain.load_state_dict({k.removeprefix("draft."): v for k, v in tensors.items()}, strict=True)
        save_draft(out, plain, head)
    barrier()
