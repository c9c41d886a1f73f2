"""Console output: one progress bar per epoch on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """`epoch 3/15 [#######.......] 195/390  loss 0.0912  acc 0.9721  41,230 ex/s  eta 0:05`.

    While the epoch runs (on a terminal) the line ends with the time left, as Keras' bar does; the
    epoch's final line has its duration and the validation accuracy instead. `due` is cheap to
    call every step: only when a redraw is due does the caller fetch metric values from the device.
    """

    def __init__(
        self,
        epoch: int,
        epochs: int,
        steps: int,
        batch_size: int,
        stream: TextIO = sys.stderr,
        interval: float = 0.25,
        width: int = 24,
        done: int = 0,
    ):
        self.epoch, self.epochs, self.steps, self.batch_size = epoch, epochs, steps, batch_size
        self.done = done  # steps of this epoch run before a resume: not part of the rate
        self.stream, self.interval, self.width = stream, interval, width
        self.tty = stream.isatty()
        self.start = self.last_draw = time.perf_counter()
        self.step = done

    def due(self) -> bool:
        """True when a redraw is due (on a terminal only)."""
        return self.tty and time.perf_counter() - self.last_draw >= self.interval

    def draw(self, step: int, loss: float, accuracy: float) -> None:
        """Redraw the running line (terminals only), ending with the estimated time left."""
        self.step, self.last_draw = step, time.perf_counter()
        seconds = self.last_draw - self.start
        per_step = seconds / max(step - self.done, 1)
        if self.tty:
            eta = _clock(per_step * (self.steps - step))
            self.stream.write(f"\r{self._line(step, loss, accuracy, seconds)}  eta {eta}")
            self.stream.flush()

    def finish(self, loss: float, accuracy: float, val_accuracy: float | None = None) -> None:
        """The epoch's last line: its duration and, when there is a validation set, `val acc`."""
        seconds = time.perf_counter() - self.start
        val = f"  val acc {val_accuracy:.4f}" if val_accuracy is not None else ""
        line = f"{self._line(self.steps, loss, accuracy, seconds)}  {seconds:.1f} s{val}"
        # On a terminal, blank the longer running line (with its eta) before the final one.
        self.stream.write(f"\r\033[K{line}\n" if self.tty else line + "\n")
        self.stream.flush()

    def _line(self, step: int, loss: float, accuracy: float, seconds: float) -> str:
        rate = (step - self.done) * self.batch_size / max(seconds, 1e-9)
        filled = self.width * step // max(self.steps, 1)
        return (
            f"epoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{step}/{self.steps}  loss {loss:.4f}  acc {accuracy:.4f}  {rate:,.0f} ex/s"
        )


def _clock(seconds: float) -> str:
    """12.4 -> '0:12', 3725 -> '1:02:05'."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summary(metrics: dict) -> str:
    """The short report printed after a run."""
    val = metrics.get("val_accuracy")
    val_text = f"val {100 * val:.2f} %  " if val is not None else ""
    return (
        f"test accuracy {100 * metrics['test_accuracy']:.2f} %  (loss {metrics['test_loss']:.4f})  "
        f"{val_text}\n{_count(metrics['epochs'], 'epoch')} in {metrics['wall_seconds']:.1f} s, "
        f"{metrics['train_examples_per_sec']:,.0f} train examples/s\n"
        f"run directory: {metrics['run_dir']}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
