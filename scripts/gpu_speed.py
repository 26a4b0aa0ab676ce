#!/usr/bin/env python3
"""Wall-clock speed of hyperbagel's real code paths with random weights, on one device.

Speed does not depend on weight values for fixed-step samplers, so the models here are the project's own modules
(``Bagel``, ``AutoEncoder``, ``student_from_teacher``, ``build_draft``) built on the meta device, allocated directly
on the target device in the target dtype and filled with a cheap random init. Every timed call is the project's code:

1. text-to-image: ``Pipeline.generate`` with the teacher (``accelerated=False``: BAGEL's 50-point schedule with CFG),
   with a student whose ``StudentInfo`` says 6 steps, and with one that says 1 step;
2. editing: the same three rows through ``Pipeline.edit`` on a random source image;
3. understanding: one target decoding step over a ~300-token KV cache, one draft step of the Hyper-Bagel draft
   (``decode/draft.py``), their cost ratio c, a target verification forward, and plain greedy decoding
   (``generate_text``) vs speculative greedy decoding (``speculative_generate``) of N tokens. Random weights give
   meaningless acceptance, so only the per-forward times and c describe deployment.

Examples::

    python scripts/gpu_speed.py --preset bagel-7b --device cuda --image-size 512 --out out/gpu_speed.json
    python scripts/gpu_speed.py --preset bagel-7b --dry-run            # meta device: parameter counts, shapes
    python scripts/gpu_speed.py --preset micro --device cpu --dtype float32 --out /tmp/speed.json

bfloat16 keeps the weights in bf16 and runs every call under ``torch.autocast(device, bfloat16)`` (the project's
bf16 convention: the pipeline feeds float32 noise, pixels and times). Each section is optional and guarded: an error
is recorded in the JSON and the next section runs. The JSON is rewritten after every section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "hyperbagel").is_dir():  # the repo's own code, installed or not
    sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.decode.draft import TargetHead, build_draft  # noqa: E402
from hyperbagel.decode.draft_config import VARIANTS  # noqa: E402
from hyperbagel.decode.generate import GREEDY, generate_text  # noqa: E402
from hyperbagel.decode.speculative import SpecConfig, _catch_up, _draft_chain, _DraftRows, speculative_generate  # noqa: E402,E501
from hyperbagel.flow.schedule import bagel_timesteps  # noqa: E402
from hyperbagel.model.autoencoder import AutoEncoder  # noqa: E402
from hyperbagel.model.bagel import Bagel  # noqa: E402
from hyperbagel.model.context import Context  # noqa: E402
from hyperbagel.model.embeddings import PositionEmbedding, sincos_2d  # noqa: E402
from hyperbagel.model.pixels import to_model_pixels  # noqa: E402
from hyperbagel.model.presets import PRESETS, preset  # noqa: E402
from hyperbagel.model.student import StudentInfo, is_generation_param, student_from_teacher  # noqa: E402
from hyperbagel.model.tokenizer import ShapesTokenizer  # noqa: E402
from hyperbagel.pipeline import EDIT_GUIDANCE, T2I_GUIDANCE, Pipeline  # noqa: E402
from hyperbagel.world.vocab import all_words  # noqa: E402

PROMPT = "a red circle left of a blue square"
INSTRUCTION = "make the red circle green"
QUESTION = "describe the image . what color is the circle ?"  # Shapes World words
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {msg}", flush=True)


# ----- configuration -----
def tiny_dims(cfg):
    """bagel-7b's structure (vocabulary, special tokens, patch sizes, VAE downsampling, z channels, position tables)
    at CPU-smoke widths and depths: checks the 7B shape paths without 7B cost."""
    r = dataclasses.replace
    return r(cfg,
             llm=r(cfg.llm, hidden_size=64, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=128,
                   head_dim=0),
             vit=r(cfg.vit, hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2),
             vae=r(cfg.vae, ch=8, num_res_blocks=1, norm_groups=8),
             image_size=112)


def size_problems(cfg, size: int, vit: bool) -> list[str]:
    """Why ``size`` cannot be this pipeline's image side (``vit``: the source image also goes through the ViT)."""
    out = []
    ld = cfg.latent_downsample
    if size % ld:
        out.append(f"{size} is not a multiple of the latent downsample {ld} (VAE ×{cfg.vae.downsample_factor}, "
                   f"latent patch {cfg.latent_patch_size})")
    elif size // ld > cfg.max_latent_size:
        out.append(f"{size // ld} latent tokens per side exceed max_latent_size {cfg.max_latent_size}")
    if vit:
        p = cfg.vit.patch_size
        if size % p:
            out.append(f"{size} is not a multiple of the ViT patch {p}")
        elif size // p > cfg.vit_max_num_patch_per_side:
            out.append(f"{size // p} ViT patches per side exceed vit_max_num_patch_per_side "
                       f"{cfg.vit_max_num_patch_per_side}")
    return out


def edit_size_for(cfg, size: int) -> int | None:
    """``size`` if editing works there, else the largest smaller side that both the VAE grid and the ViT accept."""
    if not size_problems(cfg, size, True):
        return size
    step = math.lcm(cfg.latent_downsample, cfg.vit.patch_size)
    for s in range(size // step * step, 0, -step):
        if not size_problems(cfg, s, True):
            return s
    return None


def latent_info(cfg, size: int) -> dict:
    side = size // cfg.latent_downsample
    return {"image_size": size, "latent_grid": [side, side], "latent_tokens": side * side,
            "token_dim": cfg.patch_latent_dim,
            "vae_latent_shape": [cfg.vae.z_channels, size // cfg.vae.downsample_factor,
                                 size // cfg.vae.downsample_factor]}


def sampling_forwards(num_timesteps: int, shift: float, guidance, image_guidance: bool) -> int:
    """Teacher sampling forwards of BAGEL's guided sampler (prefills not included)."""
    n = 0
    for t in bagel_timesteps(num_timesteps, shift)[:-1].tolist():
        run_text, run_image = guidance.branches(t)
        n += 1 + int(run_text) + int(run_image and image_guidance)
    return n


# ----- models -----
def count(params) -> int:
    return sum(p.numel() for p in params)


@torch.no_grad()
def random_init_(module: torch.nn.Module, device: torch.device, seed: int, std: float = 0.02) -> None:
    """In place on the device: N(0, std) matrices, unit norm scales, zero biases, the fixed sin-cos tables."""
    g = torch.Generator(device=device).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, std, generator=g)
        elif name.endswith("bias"):
            p.zero_()
        else:
            p.fill_(1.0)
    for m in module.modules():
        if isinstance(m, PositionEmbedding):
            m.pos_embed.copy_(torch.from_numpy(sincos_2d(m.pos_embed.shape[1], m.side)))


def build_models(cfg, device: torch.device, dtype: torch.dtype, seed: int):
    """Teacher and VAE built on meta, then allocated on ``device`` in ``dtype`` (no CPU copy, no fp32 detour)."""
    with torch.device("meta"):
        model, vae = Bagel(cfg), AutoEncoder(cfg.vae)
    if device.type == "meta":
        return model.to(dtype), vae.to(dtype)
    for i, m in enumerate((model, vae)):
        m.to(dtype)
        m.to_empty(device=device)
        random_init_(m, device, seed + i)
    return model.eval(), vae.eval()


def build_draft_on(model, device: torch.device, dtype: torch.dtype, variant: str):
    with torch.device(device):
        draft = build_draft(VARIANTS[variant], model)
    return draft.to(dtype).eval()


def param_report(model, vae, student, draft, dtype: torch.dtype) -> dict:
    named = dict(model.named_parameters())
    gen = count(p for n, p in named.items() if is_generation_param(n))
    llm = count(model.language_model.parameters())
    llm_gen = count(p for n, p in model.language_model.named_parameters() if "_moe_gen" in n)
    ids = {id(p) for p in model.parameters()}
    extra = count(p for p in student.parameters() if id(p) not in ids) if student is not None else 0
    d = count(draft.parameters()) if draft is not None else 0
    size = torch.empty((), dtype=dtype).element_size()
    rep = {
        "teacher_total": count(model.parameters()), "llm_total": llm, "llm_understanding": llm - llm_gen,
        "llm_generation_moe_gen": llm_gen, "generation_branch_total": gen,
        "vit": count(model.vit_model.parameters()), "vae": count(vae.parameters()),
        "student_extra (own generation branch + guidance embedders)": extra, "draft": d,
        "bytes_per_param": size,
    }
    total = rep["teacher_total"] + rep["vae"] + extra + d
    rep["weights_gib (teacher+vae+one student+draft)"] = total * size / 2**30
    rep["weights_gib if 6-step and 1-step students both loaded"] = (total + extra) * size / 2**30
    return rep


def fmt_params(n: int) -> str:
    return f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


# ----- timing -----
class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn):
        self.sync()
        t0 = time.perf_counter()
        out = fn()
        self.sync()
        return time.perf_counter() - t0, out

    def repeat(self, fn, warmup: int, repeats: int) -> list[float]:
        """Seconds of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
        for _ in range(warmup):
            self(fn)
        return [self(fn)[0] for _ in range(repeats)]


def summary(values: list[float]) -> dict:
    if not values:
        return {}
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "min": min(values),
            "max": max(values), "all": values}


def reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


# ----- sections -----
def image_rows(pipes: dict, task: str, timer: Timer, args, batch: int, source, rows: dict, save) -> None:
    """Time ``Pipeline.generate``/``edit`` end to end per row, then one call split into prefill, sampling and VAE
    decode (the same internal calls ``generate``/``edit`` make), into ``rows``; ``save`` is called row by row, so a
    run cut short keeps the rows it finished."""
    texts = [PROMPT if task == "t2i" else INSTRUCTION] * batch
    seeds = [args.seed + i for i in range(batch)]
    for name, (pipe, accelerated, info) in pipes.items():
        warm, reps = (args.warmup, args.teacher_repeats) if name == "teacher" else (args.warmup, args.repeats)

        def call(pipe=pipe, accelerated=accelerated):
            if task == "t2i":
                return pipe.generate(texts, seeds, accelerated=accelerated)
            return pipe.edit([source] * batch, texts, seeds, accelerated=accelerated)

        try:
            log(f"{task} {name}: {warm} warm-up + {reps} timed call(s) of batch {batch}")
            for i in range(warm):
                dt, res = timer(call)
                log(f"  warm-up {i + 1}: {dt:.3f} s, {res.forwards} forwards")
            times, inner, fwds = [], [], []
            for i in range(reps):
                dt, res = timer(call)
                times.append(dt)
                inner.append(res.seconds)
                fwds.append(res.forwards)
                log(f"  run {i + 1}: {dt:.3f} s ({dt / batch:.3f} s/image), {res.forwards} forwards")
            row = {"accelerated": accelerated, "student_info": dataclasses.asdict(info) if info else None,
                   "sampler": dataclasses.asdict(pipe._settings(None, accelerated)),
                   "seconds_per_call": summary(times), "seconds_per_image": summary([t / batch for t in times]),
                   "pipeline_reported_seconds": inner, "forwards_per_call": fwds,
                   "forwards_per_image": fwds[0] / batch if fwds else None}
            if args.breakdown:
                row["breakdown_seconds"] = breakdown(pipe, task, texts, seeds, accelerated, timer, source, batch)
                log("  breakdown: " + ", ".join(f"{k} {v:.3f} s" for k, v in row["breakdown_seconds"].items()))
            rows[name] = row
        except Exception as err:  # noqa: BLE001 - recorded, the next row runs
            rows[name] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
            log(f"  ERROR {type(err).__name__}: {err}")
            if timer.cuda:
                torch.cuda.empty_cache()
        save()
    teacher = rows.get("teacher", {}).get("seconds_per_image", {}).get("median")
    for row in rows.values():
        med = row.get("seconds_per_image", {}).get("median")
        if teacher and med:
            row["speedup_vs_teacher (median s/image)"] = teacher / med


@torch.no_grad()
def breakdown(pipe, task, texts, seeds, accelerated, timer, source, batch) -> dict:
    gens = pipe._generators(seeds)
    if task == "t2i":
        guidance = T2I_GUIDANCE
        t_pre, (branches, _) = timer(lambda: pipe.generation_branches(texts, cfg_branches=not accelerated))
    else:
        guidance = EDIT_GUIDANCE
        t_pre, (branches, _) = timer(lambda: pipe.edit_branches([source] * batch, texts, gens,
                                                                cfg_branches=not accelerated))
    noise = pipe._noise(gens)
    settings = pipe._settings(None, accelerated)
    t_smp, x = timer(lambda: pipe._sample(branches, noise, guidance, settings, accelerated,
                                          image_guidance=task == "edit"))
    t_dec, _ = timer(lambda: pipe._decode(x))
    return {"context_prefill": t_pre, "sampling": t_smp, "vae_decode": t_dec}


@torch.no_grad()
def understanding(pipe: Pipeline, draft, timer: Timer, args, device) -> dict:
    """Target decoding step vs draft step over a ~``kv_tokens`` context ([ViT image, question]), then plain vs
    speculative greedy decoding."""
    model, fwd, cfg = pipe.model, pipe.fwd, pipe.cfg
    res: dict = {"note": "random weights: acceptance (tau) and the speculative speed-up are meaningless here; "
                         "the per-forward times and the draft/target cost ratio c are what carries over"}
    # the context: a ViT block of a square image, then a text block filling up to ~kv_tokens
    p, side_max = cfg.vit.patch_size, cfg.vit_max_num_patch_per_side
    side = max(1, min(side_max, int(math.sqrt(0.8 * args.kv_tokens))))
    rng = np.random.default_rng(args.seed)
    image = rng.integers(0, 256, (side * p, side * p, 3), dtype=np.uint8)
    ctx = Context.empty(model, 1, trace=True)
    pipe.fwd.prefill(ctx, [pipe._vit_block(to_model_pixels(image)[None].to(device))])
    words = pipe.tokenizer.encode(QUESTION)
    n_text = max(3, args.kv_tokens - ctx.length)
    block = [pipe.tokenizer.bos] + [words[i % len(words)] for i in range(n_text - 2)] + [pipe.tokenizer.eos]
    fwd.prefill_text(ctx, [block])
    timer.sync()
    res["context"] = {"tokens": ctx.length, "vit_patches": side * side, "vit_image_px": side * p,
                      "text_tokens": len(block)}
    log(f"understand: context of {ctx.length} tokens ({side * side} ViT patches + {len(block)} text tokens)")
    R, W = args.understand_repeats, max(1, args.warmup) * 3

    # 1. one target decoding step (the body of generate_text: feed one token, logits, argmax to the host)
    tok = torch.full((1, 1), fwd.bos, dtype=torch.long, device=fwd.device)

    def target_step():
        out = fwd.text_forward(ctx, tok, ctx.rope[:, None], update_cache=False)
        return model.logits(out.hidden[:, -1]).argmax(-1).tolist()

    times = timer.repeat(target_step, W, R)
    res["target_decode_step_s"] = summary(times)
    log(f"  target decoding step (1 token, KV {ctx.length}): median {1e3 * statistics.median(times):.2f} ms")

    # 2. a target verification forward of gamma + 1 tokens with layer states (what speculative decoding runs)
    spec = SpecConfig(gamma=args.gamma)
    G = spec.gamma
    ids = torch.full((1, G + 1), fwd.bos, dtype=torch.long, device=fwd.device)
    pos = ctx.rope[:, None] + torch.arange(G + 1, device=fwd.device)[None]

    def verify():
        out = fwd.text_forward(ctx, ids, pos, update_cache=False, layer_states=True)
        return model.logits(out.hidden[0]).argmax(-1).tolist()

    times = timer.repeat(verify, W, R)
    res["target_verify_forward_s"] = summary(times)
    res["verify_tokens"] = G + 1
    log(f"  target verification forward ({G + 1} tokens + layer states): median "
        f"{1e3 * statistics.median(times):.2f} ms")

    # 3. the draft: catch-up over the whole prefix once, then single draft steps and whole chains
    if draft is None:
        return res
    head = TargetHead.of(model)
    rows = _DraftRows.from_trace(draft, ctx, fwd.bos)
    dt, last = timer(lambda: _catch_up(draft, head, rows))
    res["draft_prefix_catch_up_s"] = dt
    log(f"  draft catch-up over the {rows.length}-token prefix: {1e3 * dt:.2f} ms (first call, includes warm-up)")
    root_pos = int(ctx.rope[0])
    first = head.logits(last[:, -1]).argmax(-1)
    step_pos = torch.full((1, 1), root_pos, dtype=torch.long, device=fwd.device)

    def draft_step():  # one iteration of _draft_chain: draft layers on one token, shared head, argmax to the host
        out = draft(last, head.embed(first[:, None]), step_pos, None, rows.cache)
        token = head.logits(out[:, -1]).argmax(-1)
        int(token)
        rows.cache.crop(rows.length)
        return token

    times = timer.repeat(draft_step, W, R)
    res["draft_step_s"] = summary(times)
    c = statistics.median(times) / res["target_decode_step_s"]["median"]
    res["cost_ratio_c (draft step / target decoding step, medians)"] = c
    log(f"  draft step ({args.draft_variant}): median {1e3 * statistics.median(times):.2f} ms -> c = {c:.3f}")

    def chain():
        return _draft_chain(draft, head, rows, last, root_pos, G, fwd.eos, GREEDY, None)

    times = timer.repeat(chain, W, R)
    res["draft_chain_s (gamma logits + gamma-1 draft steps)"] = summary(times)
    res["draft_chain_per_token_s"] = statistics.median(times) / G
    log(f"  draft chain of gamma={G}: median {1e3 * statistics.median(times):.2f} ms "
        f"({1e3 * statistics.median(times) / G:.2f} ms per drafted token)")

    # 4. whole decodes: plain greedy vs speculative greedy, N tokens each
    N = args.decode_tokens
    if N <= 0:
        return res
    for name in ("plain", "speculative"):
        def run(n, name=name):
            if name == "plain":
                return generate_text(fwd, ctx.copy(), n)
            return speculative_generate(fwd, draft, ctx.copy(), n, GREEDY, spec)

        timer(lambda: run(min(N, 8)))  # warm-up
        times, outs = [], []
        for _ in range(args.decode_repeats):
            dt, out = timer(lambda: run(N))
            times.append(dt)
            outs.append(out)
        out = outs[-1]
        tokens = out.tokens[0] if name == "plain" else out.tokens
        stopped = out.stopped[0] if name == "plain" else out.stopped
        produced = len(tokens) + int(stopped)
        entry = {"seconds": summary(times), "tokens": produced, "target_forwards": out.forwards,
                 "tokens_per_s": produced / statistics.median(times), "token_ids_head": tokens[:16]}
        if name == "speculative":
            entry.update({"draft_forwards": out.draft_forwards, "accepted_per_verify": out.accepted,
                          "tau (tokens per target forward)": produced / max(1, out.forwards), "gamma": G})
        res[f"{name}_greedy_decode"] = entry
        log(f"  {name} greedy decode: {produced} tokens in {statistics.median(times):.3f} s "
            f"({entry['tokens_per_s']:.1f} tok/s, {out.forwards} target forwards)")
    plain, specd = res["plain_greedy_decode"], res["speculative_greedy_decode"]
    res["speculative_speedup (random weights)"] = specd["tokens_per_s"] / plain["tokens_per_s"]
    res["speculative_output_equals_plain_prefix"] = (
        plain["token_ids_head"][:len(specd["token_ids_head"])] == specd["token_ids_head"])
    return res


# ----- report -----
def print_tables(report: dict) -> None:
    print("\n" + "=" * 100, flush=True)
    env = report["env"]
    print(f"hyperbagel speed, random weights | {env.get('device_name')} | torch {env['torch']} | preset "
          f"{report['settings']['preset']} | {report['settings']['dtype']}")
    for task in ("t2i", "edit"):
        sec = report["sections"].get(task)
        if not sec:
            continue
        info = sec.get("size", {})
        print(f"\n{'text-to-image' if task == 't2i' else 'editing'}: {info.get('image_size')} px, "
              f"{info.get('latent_tokens')} latent tokens, batch {report['settings']['batch']}"
              f", peak {sec.get('peak_gib') or 0:.1f} GiB")
        if "error" in sec:
            print(f"  ERROR {sec['error']}")
            continue
        print(f"  {'row':<10} {'fwd/img':>8} {'s/img median':>13} {'speed-up':>9}  "
              f"{'prefill/sample/decode s':>26}  all runs (s/img)")
        for name, row in sec["rows"].items():
            if "error" in row:
                print(f"  {name:<10} ERROR {row['error']}")
                continue
            b = row.get("breakdown_seconds")
            bd = f"{b['context_prefill']:.3f}/{b['sampling']:.3f}/{b['vae_decode']:.3f}" if b else "-"
            s = row["seconds_per_image"]
            print(f"  {name:<10} {row['forwards_per_image']:>8.0f} {s['median']:>13.4f} "
                  f"{row.get('speedup_vs_teacher (median s/image)', float('nan')):>8.2f}x  {bd:>26}  "
                  f"{', '.join(f'{v:.4f}' for v in s['all'])}")
    u = report["sections"].get("understand")
    if u:
        print("\nunderstanding (batch 1, greedy):")
        if "error" in u:
            print(f"  ERROR {u['error']}")
        res = u.get("results", {})
        ms = lambda k: 1e3 * res[k]["median"] if k in res else float("nan")  # noqa: E731
        if "context" in res:
            print(f"  KV cache {res['context']['tokens']} tokens")
        print(f"  target decoding step (1 token)           {ms('target_decode_step_s'):9.2f} ms")
        if "target_verify_forward_s" in res:
            print(f"  target verification forward ({res['verify_tokens']} tokens)   "
                  f"{ms('target_verify_forward_s'):9.2f} ms")
        if "draft_step_s" in res:
            print(f"  draft step ({report['settings']['draft_variant']})               {ms('draft_step_s'):9.2f} ms"
                  f"   c = {res['cost_ratio_c (draft step / target decoding step, medians)']:.3f}")
            print(f"  draft chain per drafted token            {1e3 * res['draft_chain_per_token_s']:9.2f} ms")
        for name in ("plain", "speculative"):
            e = res.get(f"{name}_greedy_decode")
            if e:
                extra = f", tau {e['tau (tokens per target forward)']:.2f}" if name == "speculative" else ""
                print(f"  {name:<11} greedy: {e['tokens']} tokens, {e['seconds']['median']:.3f} s, "
                      f"{e['tokens_per_s']:.1f} tok/s, {e['target_forwards']} target forwards{extra}")
        if "speculative_speedup (random weights)" in res:
            print(f"  speculative/plain {res['speculative_speedup (random weights)']:.2f}x -- random weights: "
                  "acceptance is meaningless, only per-forward times and c carry over")
    if report.get("memory", {}).get("peak_gib") is not None:
        print(f"\npeak GPU memory allocated: {report['memory']['peak_gib']:.2f} GiB")
    print("=" * 100, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="micro", choices=sorted(PRESETS))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    ap.add_argument("--image-size", type=int, default=None,
                    help="text-to-image side in px (default: the preset's); a multiple of the latent downsample")
    ap.add_argument("--edit-image-size", type=int, default=None,
                    help="editing side in px (default: --image-size if the ViT accepts it, else the largest "
                         "smaller side both accept, e.g. 448 for 512 at bagel-7b)")
    ap.add_argument("--batch", type=int, default=1, help="images per generate/edit call")
    ap.add_argument("--warmup", type=int, default=1, help="warm-up calls per row")
    ap.add_argument("--teacher-repeats", type=int, default=2, help="timed calls of the teacher rows")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls of the student rows")
    ap.add_argument("--no-breakdown", dest="breakdown", action="store_false",
                    help="skip the extra call per row split into prefill / sampling / VAE decode")
    ap.add_argument("--kv-tokens", type=int, default=300, help="understanding context length")
    ap.add_argument("--understand-repeats", type=int, default=20, help="timed single forwards per measurement")
    ap.add_argument("--decode-tokens", type=int, default=64, help="tokens per whole greedy decode (0: skip)")
    ap.add_argument("--decode-repeats", type=int, default=2)
    ap.add_argument("--gamma", type=int, default=SpecConfig().gamma, help="draft tokens per verification")
    ap.add_argument("--draft-variant", default="hyper-bagel", choices=sorted(VARIANTS))
    ap.add_argument("--skip-t2i", action="store_true")
    ap.add_argument("--skip-edit", action="store_true")
    ap.add_argument("--skip-understand", action="store_true")
    ap.add_argument("--skip-one-step", action="store_true")
    ap.add_argument("--tiny-dims", action="store_true",
                    help="keep the preset's structure (vocabulary, patch sizes, VAE grid) at smoke-test widths")
    ap.add_argument("--dry-run", action="store_true",
                    help="build on the meta device only: parameter counts, shapes, memory estimate; no allocation")
    ap.add_argument("--compile", action="store_true",
                    help="compiled decode, draft and denoising steps (Pipeline(compile=True)); warm-ups compile")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="JSON report path")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("meta" if args.dry_run else args.device)
    dtype = getattr(torch, args.dtype)
    cfg = preset(args.preset)
    if args.tiny_dims:
        cfg = tiny_dims(cfg)
    if args.image_size:
        cfg = dataclasses.replace(cfg, image_size=args.image_size)
    t2i_size = cfg.image_size
    edit_size = args.edit_image_size or edit_size_for(cfg, t2i_size)

    report: dict = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
                "cpu_threads": torch.get_num_threads(), "device": str(device), "device_name": None,
                "cuda": torch.version.cuda, "argv": sys.argv},
        "config": cfg.to_dict(), "sections": {}, "memory": {},
    }
    if device.type == "cuda":
        report["env"]["device_name"] = torch.cuda.get_device_name(device)
        report["env"]["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        free, total = torch.cuda.mem_get_info(device)
        report["memory"].update({"free_gib_at_start": free / 2**30, "total_gib": total / 2**30})
        log(f"device {report['env']['device_name']}: {free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")
    else:
        report["env"]["device_name"] = platform.processor() or platform.machine()

    def save() -> None:
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")

    sizes = {"t2i": latent_info(cfg, t2i_size), "edit": latent_info(cfg, edit_size) if edit_size else None}
    problems = {"t2i": size_problems(cfg, t2i_size, False),
                "edit": size_problems(cfg, edit_size, True) if edit_size else ["no valid editing size"]}
    report["sizes"], report["size_problems"] = sizes, problems
    log(f"preset {args.preset}{' (tiny dims)' if args.tiny_dims else ''}, {args.dtype}, text-to-image "
        f"{t2i_size} px -> {sizes['t2i']['latent_tokens']} latent tokens {sizes['t2i']['latent_grid']}"
        + (f"; editing {edit_size} px -> {sizes['edit']['latent_tokens']} latent tokens + "
           f"{(edit_size // cfg.vit.patch_size) ** 2} ViT patches" if edit_size else "; editing: no valid size"))
    for k, v in problems.items():
        if v:
            log(f"  {k} size problem: {'; '.join(v)}")

    # ----- build -----
    if device.type == "cuda":  # the weights' size from a meta build, against the free memory
        try:
            m_model, m_vae = build_models(cfg, torch.device("meta"), dtype, args.seed)
            m_draft = None if args.skip_understand else build_draft_on(m_model, torch.device("meta"), dtype,
                                                                       args.draft_variant)
            need = param_report(m_model, m_vae, student_from_teacher(m_model), m_draft, dtype)
            need_gib = need["weights_gib (teacher+vae+one student+draft)"]
            report["memory"]["weights_gib_estimate"] = need_gib
            free_gib = report["memory"]["free_gib_at_start"]
            log(f"weights need about {need_gib:.1f} GiB (+ a few GiB of activations); {free_gib:.1f} GiB free"
                + ("  WARNING: will not fit (use --dtype bfloat16 or a smaller preset)" if need_gib > 0.95 * free_gib
                   else ""))
            del m_model, m_vae, m_draft
        except Exception as err:  # noqa: BLE001 - an estimate only
            log(f"memory estimate failed: {type(err).__name__}: {err}")
    t_build = time.perf_counter()
    try:
        model, vae = build_models(cfg, device, dtype, args.seed)
        student = student_from_teacher(model)
        draft = build_draft_on(model, device, dtype, args.draft_variant) if not args.skip_understand else None
    except Exception as err:  # noqa: BLE001
        report["build_error"] = f"{type(err).__name__}: {err}"
        report["build_traceback"] = traceback.format_exc()
        log(f"BUILD FAILED: {report['build_error']}")
        save()
        raise
    report["params"] = param_report(model, vae, student, draft, dtype)
    report["build_seconds"] = time.perf_counter() - t_build
    p = report["params"]
    log(f"built in {report['build_seconds']:.1f} s: teacher {fmt_params(p['teacher_total'])} params (LLM "
        f"understanding {fmt_params(p['llm_understanding'])}, generation experts "
        f"{fmt_params(p['llm_generation_moe_gen'])}, ViT {fmt_params(p['vit'])}), VAE {fmt_params(p['vae'])}, "
        f"student extra {fmt_params(p['student_extra (own generation branch + guidance embedders)'])}, draft "
        f"{fmt_params(p['draft'])}; weights "
        f"{p['weights_gib (teacher+vae+one student+draft)']:.1f} GiB in {args.dtype}")
    steps_t2i = sampling_forwards(50, 3.0, T2I_GUIDANCE, False)
    steps_edit = sampling_forwards(50, 3.0, EDIT_GUIDANCE, True)
    report["expected_teacher_sampling_forwards"] = {"t2i": steps_t2i, "edit": steps_edit}
    log(f"teacher sampling forwards (prefills excluded): text-to-image {steps_t2i}, editing {steps_edit}")
    if device.type == "cuda":
        report["memory"]["allocated_gib_after_build"] = torch.cuda.memory_allocated() / 2**30
        report["memory"]["peak_gib_build"] = torch.cuda.max_memory_allocated() / 2**30
        log(f"allocated after build: {report['memory']['allocated_gib_after_build']:.1f} GiB")
    if args.dry_run:
        report["dry_run"] = True
        save()
        print(json.dumps({"params": p, "sizes": sizes, "size_problems": problems}, indent=1))
        return 0

    tok = ShapesTokenizer.build(list(all_words()))
    if args.compile:  # one model's forwards meet about ten shapes here: past dynamo's default 8, it runs eager
        torch._dynamo.config.recompile_limit = 64
    teacher = Pipeline(model, vae, tok, compile=args.compile)
    pipes = {"teacher": (teacher, False, None)}
    info6 = StudentInfo(stage="dmdo", steps=6)
    pipes["student-6"] = (Pipeline(model, vae, tok, student, info6, compile=args.compile), True, info6)
    if not args.skip_one_step:
        info1 = StudentInfo(stage="refl", steps=1)
        pipes["student-1"] = (Pipeline(model, vae, tok, student, info1, compile=args.compile), True, info1)
    if draft is not None and args.compile:
        draft.compile(dynamic=True)  # as Pipeline.load_draft does
    timer = Timer(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    save()

    # understanding (the draft's cost c) first: it is short, and the image rows' compiles may outlast the time limit
    sections = [("understand", args.skip_understand), ("t2i", args.skip_t2i), ("edit", args.skip_edit)]
    with autocast, torch.no_grad():
        for name, skip in sections:
            if skip:
                continue
            reset_peak(device)
            t_sec = time.perf_counter()
            sec: dict = {}
            report["sections"][name] = sec
            try:
                if name in ("t2i", "edit"):
                    if problems[name]:
                        raise ValueError("; ".join(problems[name]))
                    size = t2i_size if name == "t2i" else edit_size
                    for pipe, _, _ in pipes.values():
                        pipe.cfg = dataclasses.replace(pipe.cfg, image_size=size)
                    sec["size"] = sizes[name]
                    source = None
                    if name == "edit":
                        source = np.random.default_rng(args.seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
                    sec["rows"] = {}
                    image_rows(pipes, name, timer, args, args.batch, source, sec["rows"], save)
                else:
                    sec["results"] = understanding(teacher, draft, timer, args, device)
            except Exception as err:  # noqa: BLE001 - recorded, the next section runs
                sec["error"] = f"{type(err).__name__}: {err}"
                sec["traceback"] = traceback.format_exc()
                log(f"{name} FAILED: {sec['error']}")
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            sec["seconds"] = time.perf_counter() - t_sec
            sec["peak_gib"] = peak_gib(device)
            log(f"{name} done in {sec['seconds']:.1f} s"
                + (f", peak {sec['peak_gib']:.1f} GiB" if sec["peak_gib"] is not None else ""))
            save()
    if device.type == "cuda":
        report["memory"]["peak_gib"] = max([report["memory"]["peak_gib_build"]]
                                           + [s.get("peak_gib") or 0 for s in report["sections"].values()])
    report["total_seconds"] = time.perf_counter() - T0
    save()
    print_tables(report)
    if args.out:
        log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
