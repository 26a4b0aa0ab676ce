"""What the web demo does, without the web page: one handler per tab over the public ``Pipeline``.

Each handler takes the page's control values and returns what the page shows: the result, the plan (think mode) and
a status line with the mode, the language-model forwards and the wall time, beside the last result of the other
mode so the speedup reads off directly. Bad input comes back as a one-line error in the status line, never as a
stack trace. The baseline/accelerated switch calls whatever the pipeline exposes: a task runs accelerated only when
its ``Pipeline`` method takes ``accelerated`` and ``Pipeline.can_accelerate(task)`` says the model folder has what it
needs (a distilled student, a draft model); otherwise the page says "baseline only" and why.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from hyperbagel.errors import HyperBagelError

logger = logging.getLogger(__name__)

ACCELERATED, BASELINE = "accelerated", "baseline"
MODES = (ACCELERATED, BASELINE)
TASKS = ("generate", "edit", "understand")


def acceleration_note(pipe, task: str) -> str | None:
    """None when ``task`` can run accelerated with this pipeline and model folder, else why it cannot."""
    method = getattr(pipe, task)
    if "accelerated" not in inspect.signature(method).parameters:
        what = "speculative decoding" if task == "understand" else "few-step sampling"
        return f"baseline only: {what} is not in this version of the pipeline yet"
    can = getattr(pipe, "can_accelerate", None)
    if can is not None and not can(task):
        what = "draft model" if task == "understand" else "distilled student"
        return f"baseline only: this model folder has no {what}"
    return None


@dataclass
class Timing:
    forwards: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.forwards} forwards, {self.seconds:.2f} s"


@dataclass
class History:
    """The last result of each mode in one tab of one browser session."""

    last: dict[str, Timing] = field(default_factory=dict)

    def status(self, mode: str, t: Timing) -> str:
        self.last[mode] = t
        line = f"**{mode}**: {t}"
        other = BASELINE if mode == ACCELERATED else ACCELERATED
        if other in self.last:
            o = self.last[other]
            line += f" · last {other}: {o}"
            base, fast = (o, t) if mode == ACCELERATED else (t, o)
            if fast.forwards and fast.seconds > 0:
                line += (f" · accelerated: {base.forwards / fast.forwards:.1f}× fewer forwards, "
                         f"{base.seconds / fast.seconds:.1f}× faster")
        return line


def error_status(message: str) -> str:
    return f"**Error:** {message}"


class Demo:
    """The handlers of the three tabs. One lock: the pipeline counts forwards and runs one call at a time."""

    def __init__(self, pipe):
        self.pipe = pipe
        self.lock = threading.Lock()
        self.notes = {task: acceleration_note(pipe, task) for task in TASKS}

    # ----- helpers -----
    def default_mode(self, task: str) -> str:
        return BASELINE if self.notes[task] else ACCELERATED

    def _mode_kwargs(self, task: str, mode: str) -> dict:
        if mode not in MODES:
            raise HyperBagelError(f"unknown mode {mode!r}: choose {' or '.join(MODES)}")
        if mode == ACCELERATED and self.notes[task]:
            raise HyperBagelError(self.notes[task])
        if "accelerated" in inspect.signature(getattr(self.pipe, task)).parameters:
            return {"accelerated": mode == ACCELERATED}  # the baseline is explicit: no student, no draft
        return {}

    @staticmethod
    def _int(value, name: str) -> int:
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise HyperBagelError(f"{name} must be a whole number, got {value!r}") from None
        if not np.isfinite(f) or f != int(f):
            raise HyperBagelError(f"{name} must be a whole number, got {value!r}")
        return int(f)

    def _guidance(self, base, text_scale, image_scale, interval_start, renorm_type, renorm_min):
        from hyperbagel.inputs import check_guidance

        check_guidance(text_scale, image_scale)
        try:
            return dataclasses.replace(base, text_scale=float(text_scale), image_scale=float(image_scale),
                                       interval=(float(interval_start), 1.0), renorm_type=renorm_type,
                                       renorm_min=float(renorm_min))
        except (TypeError, ValueError) as err:
            raise HyperBagelError(str(err)) from None

    def _sampler(self, mode: str, timesteps, shift):
        """The baseline samples with the page's schedule; the accelerated path with the student's own."""
        from hyperbagel.inputs import check_sampler
        from hyperbagel.pipeline import SamplerSettings

        timesteps = self._int(timesteps, "timesteps")
        check_sampler(timesteps, shift)
        return None if mode == ACCELERATED else SamplerSettings(timesteps, float(shift))

    def _run(self, fn):
        """``fn()``'s value, or the error as one line (HyperBagelError verbatim; anything else logged in full)."""
        try:
            with self.lock:
                return fn(), None
        except HyperBagelError as err:
            return None, str(err)
        except Exception as err:  # a bug, not bad input: the page gets one line, the server log the traceback
            logger.exception("demo call failed")
            return None, f"internal error ({type(err).__name__}: {err}); the server log has the details"

    # ----- the three tabs -----
    def generate(self, prompt, think, mode, seed, text_scale, interval_start, renorm_type, renorm_min, timesteps,
                 shift, max_think_tokens, history: History | None = None):
        """→ (image or None, plan, status, history)"""
        from hyperbagel.pipeline import T2I_GUIDANCE

        history = history or History()

        def call():
            kwargs = self._mode_kwargs("generate", mode)
            guidance = self._guidance(T2I_GUIDANCE, text_scale, 1.0, interval_start, renorm_type, renorm_min)
            return self.pipe.generate(prompt or "", seeds=self._int(seed, "seed"), guidance=guidance,
                                      sampler=self._sampler(mode, timesteps, shift), think=bool(think),
                                      max_think_tokens=self._think_tokens(max_think_tokens), **kwargs)

        res, err = self._run(call)
        if err:
            return None, "", error_status(err), history
        return res.images[0], (res.plans or [""])[0], history.status(mode, Timing(res.forwards, res.seconds)), history

    def edit(self, image, instruction, think, mode, seed, text_scale, image_scale, interval_start, renorm_type,
             renorm_min, timesteps, shift, max_think_tokens, history: History | None = None):
        """→ (image or None, plan, status, history)"""
        from hyperbagel.pipeline import EDIT_GUIDANCE

        history = history or History()

        def call():
            if image is None:
                raise HyperBagelError("upload an image to edit first")
            kwargs = self._mode_kwargs("edit", mode)
            guidance = self._guidance(EDIT_GUIDANCE, text_scale, image_scale, interval_start, renorm_type,
                                      renorm_min)
            return self.pipe.edit(image, instruction or "", seeds=self._int(seed, "seed"), guidance=guidance,
                                  sampler=self._sampler(mode, timesteps, shift), think=bool(think),
                                  max_think_tokens=self._think_tokens(max_think_tokens), **kwargs)

        res, err = self._run(call)
        if err:
            return None, "", error_status(err), history
        return res.images[0], (res.plans or [""])[0], history.status(mode, Timing(res.forwards, res.seconds)), history

    def understand(self, image, question, mode, sampling, temperature, max_new_tokens, seed,
                   history: History | None = None):
        """→ (answer, status, history)"""
        from hyperbagel.decode.sampling import SamplingConfig
        from hyperbagel.inputs import check_max_new_tokens

        history = history or History()

        def call():
            if image is None:
                raise HyperBagelError("upload an image to ask about first")
            kwargs = self._mode_kwargs("understand", mode)
            n = self._int(max_new_tokens, "max new tokens")
            check_max_new_tokens(n)
            try:
                cfg = SamplingConfig(float(temperature) if sampling else 0.0)
            except (TypeError, ValueError) as err:
                raise HyperBagelError(str(err)) from None
            return self.pipe.understand(image, question or "", max_new_tokens=n, sampling=cfg,
                                        seed=self._int(seed, "seed"), **kwargs)

        res, err = self._run(call)
        if err:
            return "", error_status(err), history
        return res.texts[0], history.status(mode, Timing(res.forwards, res.seconds)), history

    def _think_tokens(self, value) -> int:
        from hyperbagel.inputs import check_max_new_tokens

        n = self._int(value, "max think tokens")
        check_max_new_tokens(n)
        return n
