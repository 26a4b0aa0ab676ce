"""The public API: ``Pipeline.from_pretrained(path)`` with ``understand``, ``generate`` and ``edit``.

Every call reports the language-model forwards it made and its wall time. Generation and editing follow BAGEL's
inference: three branch contexts (full, without the last text, without images), 50 shifted Euler steps with CFG;
think mode first decodes a plan and adds it to the full context only.

A model folder with a distilled student (``student.safetensors``, ``model/student.py``) samples with it by default:
the teacher builds the full context, the student denoises with one forward per step (6 shifted Euler steps), the
guidance scales as inputs; ``accelerated=False`` runs the teacher's sampler instead.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperbagel import inputs
from hyperbagel.decode.draft import Draft, load_draft
from hyperbagel.decode.generate import GREEDY, generate_text
from hyperbagel.decode.sampling import SamplingConfig
from hyperbagel.decode.speculative import SpecConfig, speculative_generate
from hyperbagel.errors import HyperBagelError
from hyperbagel.flow.guidance import GuidanceConfig
from hyperbagel.flow.sampler import Branches, distilled_velocity, euler, guided_velocity
from hyperbagel.flow.schedule import bagel_timesteps
from hyperbagel.model.autoencoder import AutoEncoder
from hyperbagel.model.bagel import Bagel
from hyperbagel.model.checkpoint import load_pretrained
from hyperbagel.model.context import Block, Context, Forwarder
from hyperbagel.model.latents import patchify_latents, unpatchify_latents
from hyperbagel.model.pixels import to_model_pixels, to_uint8
from hyperbagel.model.siglip import patchify_image, vit_position_ids
from hyperbagel.model.student import StudentInfo, has_student, load_student
from hyperbagel.model.tokenizer import ShapesTokenizer
from hyperbagel.pretrained import resolve

T2I_GUIDANCE = GuidanceConfig(text_scale=4.0, image_scale=1.0, interval=(0.0, 1.0), renorm_type="global")
EDIT_GUIDANCE = GuidanceConfig(text_scale=4.0, image_scale=1.5, interval=(0.4, 1.0), renorm_type="text_channel")
MAX_PROMPT_WORDS = 64
# Sampling calls of at most this many images defer their contexts' last prefill into the first denoising forward.
# On the CPU a forward at batch 1 is mostly per-operator overhead: deferring the instruction of an edit saved 0.66
# forwards there, 0.32 at batch 4 and 0.07 at 32, where the forward is arithmetic and a batch of instructions of
# different lengths needs a mask per row; deferring the VAE block as well cost 0.34 forwards more at 32
# (scripts/prefill_cost.py, the shipped teacher, two threads; docs/fast-path.md).
DEFER_MAX_BATCH = 4


@dataclass(frozen=True)
class SamplerSettings:
    num_timesteps: int = 50  # points of the shifted schedule: num_timesteps − 1 Euler steps
    shift: float = 3.0
    solver: str = "euler"  # or "dpmsolver++" / "unipc" (flow/solvers.py): num_timesteps − 1 evaluations


@dataclass
class ImageResult:
    images: list[np.ndarray]  # uint8 HWC
    forwards: int
    seconds: float
    plans: list[str] | None = None


@dataclass
class TextResult:
    texts: list[str]
    forwards: int
    seconds: float


def defers(batch: int) -> bool:
    """Whether a sampling call of ``batch`` images defers its contexts' last prefill (``DEFER_MAX_BATCH``)."""
    return batch <= DEFER_MAX_BATCH


class Pipeline:
    def __init__(self, model: Bagel, vae: AutoEncoder, tokenizer: ShapesTokenizer, student: Bagel | None = None,
                 student_info: StudentInfo | None = None, compile: bool = False, fused_text: bool = False):
        """``compile``: decode, draft and denoising steps run through ``torch.compile`` (see ``Forwarder``); the
        first call of each shape compiles (minutes on a CPU), later ones are faster. ``fused_text``: the teacher's
        text steps (decoding, verification) run through fused copies of its understanding layers
        (``model/fused_layer.py``): faster at small sizes, for a third of the language model's weights again in
        memory."""
        self.model, self.vae, self.tokenizer = model.eval(), vae.eval(), tokenizer
        self.fwd = Forwarder(self.model, compile=compile, fused_text=fused_text)
        self.cfg = model.cfg
        self.student = student.eval() if student is not None else None
        self.student_info = student_info or (StudentInfo() if student is not None else None)
        self.student_fwd = Forwarder(self.student, compile=compile) if student is not None else None
        self.draft: Draft | None = None  # speculative decoding for answers and think plans (load_draft)
        self.spec = SpecConfig()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", student: str | Path | bool | None = None,
                        compile: bool = False, fused_text: bool = False) -> Pipeline:
        """``student``: None loads the folder's student if it has one, False never, a path that folder's student
        (on this folder's teacher)."""
        path = resolve(path)  # a folder, or a shipped model's short name
        model, vae = load_pretrained(path, device)
        student_model, info = None, None
        source = path if student is None or student is True else (None if student is False else Path(student))
        if source is not None and (has_student(source) or student is not None):
            student_model, info = load_student(source, model)
        tokenizer = ShapesTokenizer.load(path / "tokenizer.json")
        tokenizer.check_fits(model.cfg.llm.vocab_size, dataclasses.asdict(model.cfg.special_tokens),
                             str(path / "tokenizer.json"))
        return cls(model, vae, tokenizer, student_model, info, compile, fused_text)

    def load_draft(self, path: str | Path | None, spec: SpecConfig | None = None) -> None:
        """Decode answers and think plans speculatively with the draft in ``path`` (None: plain decoding again).
        Output is unchanged (greedy: token for token; sampling: in distribution); only the forwards drop."""
        self.draft = None if path is None else load_draft(path, self.model)
        if self.draft is not None and self.fwd.compiled:
            self.draft.compile(dynamic=True)  # the draft step
        self.spec = spec or SpecConfig()

    def can_accelerate(self, task: str) -> bool:
        """Whether ``task`` (generate, edit, understand) has an accelerated path with this model folder."""
        if task in ("generate", "edit"):
            return self.student is not None
        if task == "understand":
            return self.draft is not None
        raise HyperBagelError(f"unknown task {task!r}: generate, edit or understand")

    def _check(self, guidance: GuidanceConfig, sampler: SamplerSettings | None, accelerated: bool,
               think_tokens: int) -> None:
        """Guidance inside the range the sampling model was trained on, a valid schedule, a token budget."""
        info = self.student_info if accelerated else None
        inputs.check_guidance(guidance.text_scale, guidance.image_scale,
                              getattr(info, "text_scale_range", inputs.TEXT_SCALE_RANGE),
                              getattr(info, "image_scale_range", inputs.IMAGE_SCALE_RANGE))
        if sampler is not None:
            inputs.check_sampler(sampler.num_timesteps, sampler.shift)
        inputs.check_max_new_tokens(think_tokens)

    @property
    def forwards(self) -> int:
        """Language-model forwards so far, teacher and student together."""
        return self.fwd.forwards + (self.student_fwd.forwards if self.student_fwd is not None else 0)

    def _accelerated(self, accelerated: bool | None) -> bool:
        if accelerated and self.student is None:
            raise HyperBagelError("no distilled student in this model folder (student.safetensors); "
                                  "train one with `hyperbagel distill`, or sample with the teacher")
        return self.student is not None if accelerated is None else accelerated

    def _settings(self, sampler: SamplerSettings | None, accelerated: bool) -> SamplerSettings:
        if sampler is not None:
            return sampler
        if accelerated:
            return SamplerSettings(self.student_info.steps + 1, self.student_info.shift)
        return SamplerSettings()

    # ----- inputs -----
    def _text_block(self, text: str) -> list[int]:
        if not text or not text.strip():
            raise HyperBagelError("the prompt is empty")
        ids = self.tokenizer.encode(text)
        if len(ids) > MAX_PROMPT_WORDS:
            raise HyperBagelError(f"the prompt has {len(ids)} words; at most {MAX_PROMPT_WORDS} are supported")
        return [self.tokenizer.bos, *ids, self.tokenizer.eos]

    def _pixels(self, image) -> torch.Tensor:
        arr = np.asarray(image)
        R = self.cfg.image_size
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise HyperBagelError(f"expected an RGB uint8 image, got an array of shape {arr.shape} ({arr.dtype})")
        if arr.shape[:2] != (R, R):
            raise HyperBagelError(f"this model works on {R}×{R} images, got {arr.shape[1]}×{arr.shape[0]}")
        return to_model_pixels(arr).to(self.fwd.device)

    # ----- context building -----
    def _vit_block(self, pixels: torch.Tensor) -> Block:
        p = self.cfg.vit.patch_size
        tokens = torch.stack([patchify_image(px, p) for px in pixels])
        h, w = pixels.shape[2] // p, pixels.shape[3] // p
        ids = vit_position_ids(h, w, self.cfg.vit_max_num_patch_per_side).to(self.fwd.device)
        return self.fwd.vit_block(tokens.to(self.fwd.device), ids)

    def latent_ids(self) -> torch.Tensor:
        """Position ids of the latent tokens of one image."""
        return self._latent_ids()[0]

    def _latent_ids(self) -> tuple[torch.Tensor, int, int]:
        side = self.cfg.image_size // self.cfg.latent_downsample
        return vit_position_ids(side, side, self.cfg.max_latent_size).to(self.fwd.device), side, side

    def _encode(self, pixels: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
        return patchify_latents(self.vae.encode_rows(pixels, generators), self.cfg.latent_patch_size)

    def _decode(self, x: torch.Tensor) -> list[np.ndarray]:
        _, h, w = self._latent_ids()
        z = unpatchify_latents(x, h, w, self.cfg.latent_patch_size, self.cfg.vae.z_channels)
        return [to_uint8(img) for img in self.vae.decode(z)]

    def _noise(self, generators: list[torch.Generator]) -> torch.Tensor:
        ids, _, _ = self._latent_ids()
        return torch.stack([torch.randn(len(ids), self.cfg.patch_latent_dim, generator=g)
                            for g in generators]).to(self.fwd.device)

    @staticmethod
    def _generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator().manual_seed(int(s)) for s in seeds]

    def _sample(self, branches: Branches, noise: torch.Tensor, guidance: GuidanceConfig, s: SamplerSettings,
                accelerated: bool = False, image_guidance: bool = True):
        ids, _, _ = self._latent_ids()
        if accelerated:
            image_scale = guidance.image_scale if image_guidance else 1.0
            gate = guidance.interval if self.student_info.gated else None
            velocity = distilled_velocity(self.student_fwd, branches.cond, ids, guidance.text_scale, image_scale, gate)
        else:
            velocity = guided_velocity(self.fwd, branches, ids, guidance)
        if s.solver != "euler":
            from hyperbagel.flow.solvers import solve

            return solve(velocity, noise, s.solver, s.num_timesteps - 1, s.shift)
        return euler(velocity, noise, bagel_timesteps(s.num_timesteps, s.shift))

    def noise(self, seeds: list[int]) -> torch.Tensor:
        """The initial noise of each seed (what every sampler of this pipeline starts from)."""
        return self._noise(self._generators(seeds))

    def _decode_text(self, ctx: Context, max_tokens: int, sampling: SamplingConfig = GREEDY,
                     generator: torch.Generator | None = None) -> list[list[int]]:
        """Answer tokens per row: plain decoding, or with a draft speculative decoding one row at a time."""
        if self.draft is None:
            return generate_text(self.fwd, ctx, max_tokens, sampling, generator).tokens
        return [speculative_generate(self.fwd, self.draft, ctx.select(torch.tensor([b])), max_tokens, sampling,
                                     self.spec, generator).tokens for b in range(ctx.batch)]

    @contextmanager
    def _plain_decoding(self, on: bool):
        """With ``on``, one call decodes without the draft (the baseline), which is set aside meanwhile."""
        draft = self.draft
        if on:
            self.draft = None
        try:
            yield
        finally:
            self.draft = draft

    def _think(self, ctx: Context, max_tokens: int) -> tuple[list[str], list[list[int]]]:
        tokens = self._decode_text(ctx.copy(), max_tokens)
        return [self.tokenizer.decode(t) for t in tokens], [[self.tokenizer.bos, *t, self.tokenizer.eos]
                                                            for t in tokens]

    # ----- public calls -----
    @torch.no_grad()
    def generate(
        self,
        prompts: str | list[str],
        seeds: int | list[int] = 0,
        guidance: GuidanceConfig = T2I_GUIDANCE,
        sampler: SamplerSettings | None = None,
        think: bool = False,
        max_think_tokens: int = 64,
        accelerated: bool | None = None,
    ) -> ImageResult:
        """Text-to-image. ``accelerated`` (default: when a student is loaded) samples with the student;
        ``accelerated=False`` is the whole baseline (the teacher's sampler, think plans without the draft)."""
        prompts = inputs.texts(prompts, "prompt")
        seeds = inputs.seeds(seeds, len(prompts))
        baseline, accelerated = accelerated is False, self._accelerated(accelerated)
        self._check(guidance, sampler, accelerated, max_think_tokens)
        start, before = time.perf_counter(), self.forwards
        with self._plain_decoding(baseline):
            branches, plans = self.generation_branches(prompts, think, max_think_tokens,
                                                       cfg_branches=not accelerated, defer=defers(len(prompts)))
        x = self._sample(branches, self._noise(self._generators(seeds)), guidance,
                         self._settings(sampler, accelerated), accelerated, image_guidance=False)
        images = self._decode(x)
        return ImageResult(images, self.forwards - before, time.perf_counter() - start, plans)

    def generation_branches(self, prompts: list[str], think: bool = False, max_think_tokens: int = 64,
                            cfg_branches: bool = True, defer: bool = False) -> tuple[Branches, list[str] | None]:
        """The contexts of text-to-image: full ``[text (+ plan)]``, no-text ``[]``, no-image ``[text]`` (the
        unconditional ones only with ``cfg_branches``), and the think-mode plans. With ``defer`` (sampling only,
        not training) each context's last prefill runs inside its first denoising forward."""
        blocks = [self._text_block(p) for p in prompts]
        B = len(prompts)
        cond = Context.empty(self.model, B, trace=think and self.draft is not None)
        self.fwd.prefill_text(cond, blocks, defer=defer and not think)
        no_image = cond.copy() if cfg_branches else None  # text only: for text-to-image the full context
        plans = None
        if think:
            plans, plan_blocks = self._think(cond, max_think_tokens)
            self.fwd.prefill_text(cond, plan_blocks, defer=defer)
        if not cfg_branches:
            return Branches(cond), plans
        return Branches(cond, Context.empty(self.model, B), no_image), plans

    @torch.no_grad()
    def edit(
        self,
        images,
        instructions: str | list[str],
        seeds: int | list[int] = 0,
        guidance: GuidanceConfig = EDIT_GUIDANCE,
        sampler: SamplerSettings | None = None,
        think: bool = False,
        max_think_tokens: int = 64,
        accelerated: bool | None = None,
    ) -> ImageResult:
        """Editing. ``accelerated`` (default: when a student is loaded) samples with the student;
        ``accelerated=False`` is the whole baseline (the teacher's sampler, think plans without the draft)."""
        instructions = inputs.texts(instructions, "instruction")
        images = inputs.images(images, self.cfg.image_size)
        if len(images) != len(instructions):
            raise HyperBagelError(f"{len(images)} images for {len(instructions)} instructions")
        seeds = inputs.seeds(seeds, len(images))
        baseline, accelerated = accelerated is False, self._accelerated(accelerated)
        self._check(guidance, sampler, accelerated, max_think_tokens)
        start, before = time.perf_counter(), self.forwards
        gens = self._generators(seeds)
        with self._plain_decoding(baseline):
            branches, plans = self.edit_branches(images, instructions, gens, think, max_think_tokens,
                                                 cfg_branches=not accelerated, defer=defers(len(images)))
        x = self._sample(branches, self._noise(gens), guidance, self._settings(sampler, accelerated), accelerated)
        return ImageResult(self._decode(x), self.forwards - before, time.perf_counter() - start, plans)

    def edit_branches(self, images, instructions: list[str], generators: list[torch.Generator], think: bool = False,
                      max_think_tokens: int = 64, cfg_branches: bool = True,
                      defer: bool = False) -> tuple[Branches, list[str] | None]:
        """The contexts of editing: full ``[VAE, ViT, text (+ plan)]``, no-text ``[VAE, ViT]``, no-image
        ``[text]`` (the unconditional ones only with ``cfg_branches``); ``generators`` draw the VAE posterior
        samples of the sources. The VAE and ViT blocks are prefilled in one forward; with ``defer`` (sampling
        only, not training) each context's instruction runs inside its first denoising forward."""
        B = len(images)
        blocks = [self._text_block(t) for t in instructions]
        pixels = torch.stack([self._pixels(im) for im in images])
        ids, _, _ = self._latent_ids()
        cond = Context.empty(self.model, B, trace=think and self.draft is not None)
        zero = torch.zeros(B, device=self.fwd.device)
        # the VAE block runs the teacher's generation expert, so it is never deferred into a student's forward
        self.fwd.prefill(cond, [self.fwd.latent_block(self._encode(pixels, generators), zero, ids),
                                self._vit_block(pixels)])
        no_text = cond.copy() if cfg_branches else None
        text = self.fwd.text_block(blocks)
        self.fwd.prefill(cond, [text], defer=defer and not think)
        no_image = None
        if cfg_branches:
            no_image = Context.empty(self.model, B)
            self.fwd.prefill(no_image, [text], defer=defer)
        plans = None
        if think:
            plans, plan_blocks = self._think(cond, max_think_tokens)
            self.fwd.prefill_text(cond, plan_blocks, defer=defer)
        return Branches(cond, no_text, no_image), plans

    @torch.no_grad()
    def understand(
        self,
        images,
        questions: str | list[str],
        max_new_tokens: int = 64,
        sampling: SamplingConfig = GREEDY,
        seed: int = 0,
        accelerated: bool | None = None,
    ) -> TextResult:
        """Answers. ``accelerated`` (default: when a draft is loaded) decodes speculatively, output unchanged."""
        if accelerated and self.draft is None:
            raise HyperBagelError("no draft model loaded (Pipeline.load_draft, --draft): answer with plain decoding")
        questions = inputs.texts(questions, "question")
        images = inputs.images(images, self.cfg.image_size)
        if len(images) != len(questions):
            raise HyperBagelError(f"{len(images)} images for {len(questions)} questions")
        inputs.check_max_new_tokens(max_new_tokens)
        seed = inputs.seeds(seed, 1)[0]
        start, before = time.perf_counter(), self.forwards
        with self._plain_decoding(accelerated is False):
            ctx = self.context_for_question(images, questions, trace=self.draft is not None)
            tokens = self._decode_text(ctx, max_new_tokens, sampling, torch.Generator().manual_seed(seed))
        texts = [self.tokenizer.decode(t) for t in tokens]
        return TextResult(texts, self.forwards - before, time.perf_counter() - start)

    def context_for_question(self, images, questions: list[str], trace: bool = False) -> Context:
        """[ViT image, question]: the context an answer is decoded from (``trace``: recorded for a draft)."""
        blocks = [self._text_block(q) for q in questions]
        ctx = Context.empty(self.model, len(questions), trace=trace)
        vit = self._vit_block(torch.stack([self._pixels(im) for im in images]))
        self.fwd.prefill(ctx, [vit, self.fwd.text_block(blocks)])
        return ctx
