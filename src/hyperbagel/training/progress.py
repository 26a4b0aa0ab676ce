"""Progress of a training loop: a bar on the main process, and a log line every ``every`` steps."""

from __future__ import annotations

import logging
import time

from hyperbagel.training.distributed import is_main


class Progress:
    def __init__(self, name: str, total: int, initial: int, every: int, enabled: bool = True,
                 logger: logging.Logger | None = None):
        self.name, self.every = name, every
        self.log = logger or logging.getLogger("hyperbagel.training")
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled and is_main():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=name, unit="step", dynamic_ncols=True)

    def step(self, step: int, logged: dict[str, float]) -> None:
        """After optimizer step ``step`` (0-based): the losses (keys with a ``/``) on the bar and, every ``every``
        steps, in the log."""
        losses = {k: v for k, v in logged.items() if "/" in k}
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()})
        if (step + 1) % self.every == 0 and is_main():
            self.log.info("%s step %d %s (%.1f s)", self.name, step + 1,
                          " ".join(f"{k}={v:.4f}" for k, v in losses.items()), self.elapsed())

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
