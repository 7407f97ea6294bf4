"""Progress of a job on a terminal: a one-line bar on stderr, fed by the step lines of a party.

:func:`job_program` (``progress=[party]``) prints one line per step at that party to stderr,
``[party] message``; party processes inherit the launcher's stderr. When stderr is a terminal,
:func:`progress_display` points file descriptor 2 at a pipe for the duration of the run, reads
those lines, and redraws one bar line on the terminal instead; every other line (warnings,
errors) is printed above the bar unchanged. Elsewhere (a file, a pipe, a test) the step lines
go to stderr as they are. No dependencies; nothing here touches secret data.

The bar's stages (fractions of the bar): start-up of the parties, schema agreed, rows
secret-shared, training (per epoch when the party prints ``epoch K/N`` lines; otherwise a moving
block), evaluation and reveal, centralised baseline, done.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO

MODES = ("auto", "bar", "lines", "off")

# fraction of the bar reached when a step line arrives; training fills TRAIN_START .. TRAIN_END
SCHEMA, INPUT_DONE, TRAIN_END, EVAL_DONE, BASELINE = 0.08, 0.15, 0.85, 0.95, 0.97
TRAIN_START = INPUT_DONE
_EPOCH = re.compile(r"\bepoch (\d+)\s*/\s*(\d+)\b")


def resolve_mode(progress: bool | str, stream: IO[str] | None = None) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` for a ``progress`` argument (True = ``"auto"``: a bar
    when ``stream`` (default ``sys.stderr``) is a terminal on file descriptor 2, else lines)."""
    if progress is True:
        progress = "auto"
    elif progress is False or progress is None:
        progress = "off"
    if progress not in MODES:
        raise ValueError(f"progress must be True, False or one of {MODES}, got {progress!r}")
    if progress != "auto":
        return progress
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty() and stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        tty = False
    return "bar" if tty else "lines"


class Bar:
    """One redrawn line: ``[#####.....]  52%  label  3.1 s``. ``busy`` (lo, hi) animates a block
    between lo and hi while no finer position is known. Thread-safe."""

    def __init__(self, stream: IO[str], *, width: int | None = None, unicode: bool | None = None):
        self.stream = stream
        self.width = width
        if unicode is None:
            unicode = (getattr(stream, "encoding", None) or "").lower().replace("-", "") == "utf8"
        self.full, self.empty = ("█", "░") if unicode else ("#", "-")
        self.fraction, self.label, self.busy = 0.0, "", None
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.shown = self.closed = False

    def set(self, fraction: float | None = None, label: str | None = None, busy=None) -> None:
        with self.lock:
            if self.closed:
                return
            if fraction is not None:
                self.fraction = max(self.fraction, min(1.0, fraction))
            if label is not None:
                self.label = label
            self.busy = busy
            self._draw()

    def tick(self) -> None:
        with self.lock:
            if not self.closed:
                self._draw()

    def print_above(self, line: str) -> None:
        """Write ``line`` (no newline) on its own line, then redraw the bar under it."""
        with self.lock:
            self._clear()
            with contextlib.suppress(OSError, ValueError):
                self.stream.write(line + "\n")
                self.stream.flush()
            if not self.closed:
                self._draw()

    def close(self, label: str | None = None) -> None:
        """Leave the bar full with ``label`` (or erase it when None) and end the line."""
        with self.lock:
            if label is None:
                self._clear()
            else:
                self.fraction, self.label, self.busy = 1.0, label, None
                self._draw()
                with contextlib.suppress(OSError, ValueError):
                    self.stream.write("\n")
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
            self.shown = False
            self.closed = True

    def render(self, columns: int) -> str:
        """The bar line for a terminal ``columns`` wide."""
        elapsed = time.monotonic() - self.start
        n = max(10, min(40, columns // 3))
        cells = [self.empty] * n
        filled = int(self.fraction * n + 1e-9)
        for i in range(filled):
            cells[i] = self.full
        if self.busy is not None:  # a 3-cell block sweeping the busy range
            lo, hi = (int(b * n) for b in self.busy)
            lo = max(lo, filled)
            if hi - lo > 3:
                span = hi - lo - 3
                k = int(elapsed * 8) % (2 * span)
                pos = lo + (k if k < span else 2 * span - k)
                for i in range(pos, pos + 3):
                    cells[i] = self.full
        text = f"[{''.join(cells)}] {int(100 * self.fraction):3d}%  {self.label}"
        tail = f"  {elapsed:.1f} s"
        room = columns - 1 - len(tail)
        if len(text) > room:
            text = text[: max(0, room - 1)] + "…" if room > 1 else ""
        return text + tail

    def _columns(self) -> int:
        if self.width is not None:
            return self.width
        return shutil.get_terminal_size((80, 24)).columns

    def _draw(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the terminal went away: stay silent
            self.stream.write("\r" + self.render(self._columns()) + "\x1b[K")
            self.stream.flush()
            self.shown = True

    def _clear(self) -> None:
        if self.shown:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r\x1b[K")
        self.shown = False


class StepReader:
    """Turns the step lines of ``party`` (``[party] message``) into bar positions; other lines
    are printed above the bar. ``epochs``: the job's number of epochs (for the label)."""

    def __init__(self, bar: Bar, party: str, epochs: int | None = None):
        self.bar, self.prefix, self.epochs = bar, f"[{party}] ", epochs
        self.training = False

    def starting(self, label: str) -> None:
        self.bar.set(0.0, label, busy=(0.0, SCHEMA))

    def note(self, fraction: float | None, label: str) -> None:
        """A step of the launcher itself (e.g. the centralised baseline)."""
        self.bar.set(fraction, label)

    def feed(self, line: str) -> None:
        if not line.startswith(self.prefix):
            self.bar.print_above(line)
            return
        msg = line[len(self.prefix) :].strip()
        fraction, label, busy = step_position(msg, self.training)
        if msg.startswith("rows secret-shared"):
            self.training = True
        elif msg.startswith("trained"):
            self.training = False
        self.bar.set(fraction, label, busy=busy)


def step_position(msg: str, training: bool = False) -> tuple[float | None, str, tuple[float, float] | None]:
    """``(fraction or None, label, busy range or None)`` for one step message of
    :func:`covault.jobs.program.job_program` (without the ``[party]`` prefix)."""
    m = _EPOCH.search(msg)
    if m:
        k, n = int(m.group(1)), max(1, int(m.group(2)))
        return TRAIN_START + (TRAIN_END - TRAIN_START) * min(k, n) / n, f"training: epoch {k}/{n}", None
    if msg.startswith("schema agreed"):
        return SCHEMA, "schema agreed; secret-sharing the rows", (SCHEMA, INPUT_DONE)
    if msg.startswith("rows aligned"):
        return SCHEMA, _short(msg), (SCHEMA, INPUT_DONE)
    if msg.startswith("rows secret-shared"):
        return INPUT_DONE, "training", (TRAIN_START, TRAIN_END)
    if msg.startswith("trained"):
        return TRAIN_END, _short(msg) + "; evaluating", (TRAIN_END, EVAL_DONE)
    if msg.startswith("model written"):
        return EVAL_DONE, "model written", None
    if msg.startswith("metrics"):
        return EVAL_DONE, "metrics revealed; the parties finish", None
    busy = (TRAIN_START, TRAIN_END) if training else None
    return None, _short(msg), busy


def _short(msg: str) -> str:
    return re.sub(r"\s*\([^)]*\)\s*$", "", msg)  # drop a trailing "(0.72 s)"


@contextlib.contextmanager
def progress_display(
    mode: str,
    party: str,
    *,
    title: str | None = None,
    start: str = "starting the parties",
    epochs: int | None = None,
    fd: int = 2,
) -> Iterator[Callable[..., None]]:
    """Show the progress of a run whose step lines come from ``party``, for ``mode`` of
    :func:`resolve_mode`. Yields ``say(message, fraction=None)`` for the launcher's own steps.

    ``"bar"``: the bar starts with the label ``start``; file descriptor ``fd`` (stderr) is a
    pipe while the block runs (party processes started inside it write there too); a thread
    reads it, feeds the bar, and passes every other line through to the terminal. ``"lines"``:
    ``title`` (or ``start``) and the messages go to stderr as lines, and so do the party's
    lines. ``"off"``: nothing."""
    if mode == "off":
        yield lambda msg, fraction=None: None
        return
    if mode == "lines":

        def say(msg: str, fraction: float | None = None) -> None:
            print(f"covault: {msg}", file=sys.stderr, flush=True)

        say(title or start)
        yield say
        return
    encoding = (getattr(sys.stderr, "encoding", None) or "").lower().replace("-", "")
    _start_resource_tracker()
    with _tapped(fd) as (terminal, lines):
        bar = Bar(terminal, unicode=encoding == "utf8")
        reader = StepReader(bar, party, epochs)
        reader.starting(start)
        stop = threading.Event()

        def pump() -> None:
            for line in lines:
                reader.feed(line)

        def ticker() -> None:
            while not stop.wait(0.1):
                bar.tick()

        threads = [
            threading.Thread(target=pump, name="covault-progress-reader", daemon=True),
            threading.Thread(target=ticker, name="covault-progress-ticker", daemon=True),
        ]
        for t in threads:
            t.start()
        ok = False
        try:
            yield lambda msg, fraction=None: reader.note(fraction, msg)
            ok = True
        finally:
            stop.set()
            threads[1].join()
            lines.finish()
            threads[0].join(5.0)
            bar.close("done" if ok else None)


def _start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker now, with the real stderr: started inside the
    tap (by the first party process), it would keep the pipe open for the life of this process."""
    with contextlib.suppress(Exception):
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()


class _Lines:
    """Lines read from a pipe; after :meth:`finish` (the original descriptor is back) reading
    stops at the first pause of 50 ms, whether or not some process still holds the pipe."""

    def __init__(self, read_fd: int, restore: Callable[[], None]):
        self.fd, self._restore = read_fd, restore
        self.done = threading.Event()

    def finish(self) -> None:
        self._restore()
        self.done.set()

    def __iter__(self) -> Iterator[str]:
        buf = b""
        try:
            while True:
                ready, _, _ = select.select([self.fd], [], [], 0.05)
                if not ready:
                    if self.done.is_set():
                        break
                    continue
                chunk = os.read(self.fd, 1 << 16)
                if not chunk:
                    break
                *complete, buf = (buf + chunk).split(b"\n")
                for raw in complete:
                    yield raw.decode("utf-8", errors="replace").rstrip("\r")
            if buf:
                yield buf.decode("utf-8", errors="replace").rstrip("\r")
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                os.close(self.fd)


@contextlib.contextmanager
def _tapped(fd: int) -> Iterator[tuple[IO[str], _Lines]]:
    """Point ``fd`` at a pipe; yields (a text stream to the original target, the pipe's lines)."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(fd)
    terminal = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="replace")
    r, w = os.pipe()
    os.dup2(w, fd)
    os.close(w)
    restored = False

    def restore() -> None:
        nonlocal restored
        if not restored:
            restored = True
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, fd)

    lines = _Lines(r, restore)
    try:
        yield terminal, lines
    finally:
        restore()
        os.close(saved)
        with contextlib.suppress(OSError):
            terminal.flush()
            terminal.close()
