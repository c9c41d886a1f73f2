"""Console output: one progress bar per epoch on a terminal, one line per epoch otherwise."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`epoch 3/15 [#######.......] 195/390  loss 0.0912  acc 0.9721  41,230 ex/s`.

    `update` is cheap to call every step: it redraws at most every `interval` seconds, and only
    then does the caller need to fetch metric values from the device.
    """

    def __init__(self, epoch: int, epochs: int, steps: int, batch_size: int,
                 stream: TextIO = sys.stderr, interval: float = 0.25, width: int = 24, done: int = 0):
        self.epoch, self.epochs, self.steps, self.batch_size = epoch, epochs, steps, batch_size
        self.done = done  # steps of this epoch run before a resume: not part of the rate
        self.stream, self.interval, self.width = stream, interval, width
        self.tty = stream.isatty()
        self.start = self.last_draw = time.perf_counter()

    def due(self) -> bool:
        """True when a redraw is due (on a terminal only)."""
        return self.tty and time.perf_counter() - self.last_draw >= self.interval

    def draw(self, step: int, loss: float, accuracy: float, final: bool = False) -> None:
        self.last_draw = now = time.perf_counter()
        rate = (step - self.done) * self.batch_size / max(now - self.start, 1e-9)
        filled = self.width * step // max(self.steps, 1)
        line = (f"epoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
                f"{step}/{self.steps}  loss {loss:.4f}  acc {accuracy:.4f}  {rate:,.0f} ex/s")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        elif final:
            self.stream.write(line + "\n")
        self.stream.flush()


def summary(metrics: dict) -> str:
    """The short report printed after a run."""
    val = metrics.get("val_accuracy")
    val_text = f"val {100 * val:.2f} %  " if val is not None else ""
    return (f"test accuracy {100 * metrics['test_accuracy']:.2f} %  (loss {metrics['test_loss']:.4f})  "
            f"{val_text}\n{metrics['epochs']} epochs in {metrics['wall_seconds']:.1f} s, "
            f"{metrics['train_examples_per_sec']:,.0f} train examples/s\n"
            f"run directory: {metrics['run_dir']}")
