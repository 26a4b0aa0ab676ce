"""Distilled students: a second generation branch beside the teacher's, sharing its understanding weights.

Only the generation branch is distilled (the ``*_moe_gen`` weights, time embedder, ``vae2llm``/``llm2vae``, the
latent position table and the two guidance embedders); every other parameter of a student *is* the teacher's
``Parameter`` object, so the understanding path stays bit-identical by construction and costs no memory twice.

Deployment keeps both branches: contexts (text, ViT and clean-VAE prefills) are built by the teacher, so text
produced after an accelerated generation sees exactly the teacher's context; only denoising forwards run the
student. On disk a student is ``student.safetensors`` (generation-branch tensors under BAGEL's names, the
``StudentInfo`` in its metadata) plus ``student.json`` beside the teacher's files in a model folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from hyperbagel.errors import HyperBagelError
from hyperbagel.files import atomic_save_tensors, atomic_write_text
from hyperbagel.model.bagel import Bagel, guidance_embedder
from hyperbagel.model.checkpoint import AE_FILE, CONFIG_FILE, MODEL_FILE, read_tensors
from hyperbagel.pretrained import resolve

STUDENT_FILE, STUDENT_INFO = "student.safetensors", "student.json"
GEN_PREFIXES = ("time_embedder.", "vae2llm.", "llm2vae.", "latent_pos_embed.", "text_scale_embedder.",
                "image_scale_embedder.")


def is_generation_param(name: str) -> bool:
    """True for the parameters of the generation branch (the ones distillation may change)."""
    return "_moe_gen" in name or name.startswith(GEN_PREFIXES)


@dataclass(frozen=True)
class StudentInfo:
    """What a student is and how it samples by default: ``steps`` Euler steps on the ``shift``-ed schedule."""

    stage: str = "cfg"  # the last distillation stage: cfg, tscd, dmdo
    steps: int = 6
    shift: float = 3.0
    text_scale: float = 4.0  # default guidance fed to the embedders (text-to-image and editing)
    image_scale: float = 1.5  # default image guidance for editing (text-to-image feeds 1.0)
    text_scale_range: tuple[float, float] = (1.0, 5.0)  # the scales the guidance embedders were trained on
    image_scale_range: tuple[float, float] = (1.0, 2.5)
    lineage: dict[str, str] = field(default_factory=dict)  # stage → the folder it was written to
    gated: bool = False  # scales fed as 1.0 outside the task's CFG interval (flow.guidance.gated_scales)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_scale_range", tuple(self.text_scale_range))
        object.__setattr__(self, "image_scale_range", tuple(self.image_scale_range))
        if self.steps < 1:
            raise ValueError(f"StudentInfo.steps must be at least 1, got {self.steps}")
        if self.shift <= 0:
            raise ValueError(f"StudentInfo.shift must be positive, got {self.shift}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudentInfo:
        return cls(**json.loads(text))


def _set_param(module: nn.Module, name: str, param: nn.Parameter) -> None:
    *path, leaf = name.split(".")
    for part in path:
        module = getattr(module, part)
    setattr(module, leaf, param)


def generation_state(model: Bagel) -> dict[str, torch.Tensor]:
    """The generation-branch tensors of ``model`` by name."""
    return {k: v for k, v in model.state_dict().items() if is_generation_param(k)}


def student_from_teacher(teacher: Bagel, state: dict[str, torch.Tensor] | None = None) -> Bagel:
    """A student sharing ``teacher``'s understanding parameters (the same objects; they are frozen here, on the
    teacher too).

    Its generation branch is a copy of the teacher's with fresh zero-output guidance embedders, or ``state`` when
    given (strict: exactly the generation-branch names of a student).
    """
    cfg = dataclasses.replace(teacher.cfg, guidance_embedders=True)
    with torch.device("meta"):
        student = Bagel(cfg)
    device = teacher.vae2llm.weight.device
    student.text_scale_embedder = guidance_embedder(cfg.llm.hidden_size).to(device)
    student.image_scale_embedder = guidance_embedder(cfg.llm.hidden_size).to(device)
    theirs = dict(teacher.named_parameters())
    for name, _ in list(student.named_parameters()):
        if "scale_embedder." in name:  # new modules, already built above
            continue
        src = theirs[name]
        if is_generation_param(name):
            trainable = not name.startswith("latent_pos_embed.")  # a fixed sin-cos table, as in the teacher
            _set_param(student, name, nn.Parameter(src.detach().clone(), requires_grad=trainable))
        else:
            src.requires_grad_(False)
            _set_param(student, name, src)
    for name, buf in teacher.named_buffers():  # none today; shared like the understanding weights if any appear
        *path, leaf = name.split(".")
        mod = student
        for part in path:
            mod = getattr(mod, part)
        mod.register_buffer(leaf, buf)
    if state is not None:
        load_generation_state(student, state)
    return student.train(teacher.training)


def load_generation_state(student: Bagel, state: dict[str, torch.Tensor], source: str = "student weights") -> None:
    """Copy generation-branch tensors into ``student`` (strict on names and shapes)."""
    expected = generation_state(student)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        raise HyperBagelError(f"{source} do not match the student: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, wrong shapes {wrong[:3]}")
    params = dict(student.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v.to(params[k].device, params[k].dtype))


def generation_params(model: Bagel) -> list[nn.Parameter]:
    """The trainable generation-branch parameters (the latent position table is a fixed table)."""
    return [p for n, p in model.named_parameters() if is_generation_param(n) and p.requires_grad]


def _link_or_copy(src: Path, dst: Path) -> None:
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def save_student(folder: str | Path, student: Bagel | dict[str, torch.Tensor], info: StudentInfo,
                 teacher_folder: str | Path) -> Path:
    """A deployable model folder: the teacher's files (hard-linked when possible) + ``student.safetensors`` (from
    the student, or its generation-branch tensors as ``generation_state`` gives them)."""
    folder, teacher_folder = Path(folder), resolve(teacher_folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, MODEL_FILE, AE_FILE, "tokenizer.json"):
        if (teacher_folder / name).exists() and teacher_folder.resolve() != folder.resolve():
            _link_or_copy(teacher_folder / name, folder / name)
    text = info.to_json()
    tensors = student if isinstance(student, dict) else generation_state(student)
    atomic_save_tensors(tensors, folder / STUDENT_FILE, {"student": text, "format": "pt"})
    atomic_write_text(text + "\n", folder / STUDENT_INFO)
    return folder


def has_student(folder: str | Path) -> bool:
    return (Path(folder) / STUDENT_FILE).is_file()


def read_student_info(folder: str | Path) -> StudentInfo:
    path = Path(folder) / STUDENT_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as err:
        raise HyperBagelError(f"cannot read {path}: {err}") from None
    if "student" not in meta:
        raise HyperBagelError(f"{path} has no student metadata")
    return StudentInfo.from_json(meta["student"])


def load_student(folder: str | Path, teacher: Bagel) -> tuple[Bagel, StudentInfo]:
    """The student of a model folder on top of its (already loaded) teacher."""
    folder = Path(folder)
    if not has_student(folder):
        raise HyperBagelError(f"{folder} holds no {STUDENT_FILE}")
    info = read_student_info(folder)
    state = read_tensors(folder / STUDENT_FILE, device=teacher.vae2llm.weight.device)
    student = student_from_teacher(teacher)
    load_generation_state(student, state, str(folder / STUDENT_FILE))
    return student.eval(), info
