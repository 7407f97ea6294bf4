"""``covault run CONFIG SCRIPT.py``: every party of a consortium config on this machine.

Each party is a separate ``covault party`` OS process, as on separate hosts, except that:

- parties listen on fresh loopback ports (the launcher binds ``127.0.0.1:0`` for each and hands
  the listening socket to the party, so there is no race for the port); the configured hosts
  and ports are ignored;
- TLS uses throw-away certificates (a fresh CA and one certificate per party in a temporary
  directory, deleted afterwards) instead of ``[tls] certs``; ``[tls] plaintext = true`` is kept;
- a random job name isolates the run from any other.

Protocol, dealer, compute parties, data parties (config parties that are neither compute parties
nor the dealer: one process each, like every party), fractional bits and timeout come from the
config. Every line a party writes goes to the launcher's stdout/stderr prefixed with ``[NAME]``.
The launcher returns 1 if any party failed; once one has, the others get the supervisor's
failure grace (:mod:`covault.launch.supervisor`) to stop on their own (a failing party tells its
peers at once), a party left running alone only the short grace (all its peers have stopped: it
is stalled, or stopping too); then they are terminated and named. On Ctrl-C (SIGINT) or SIGTERM every party is terminated (SIGTERM, then
SIGKILL after 3 s) and the launcher returns 130. Parties run in their own process groups and exit
by themselves if the launcher dies (their stdin pipe closes), so none is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from covault.deploy.config import ConfigError, ConsortiumConfig, load_config
from covault.exitcodes import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from covault.launch.supervisor import Child, FailureClock, stop
from covault.transport.tcp import HOST, open_listener
from covault.transport.tls import throwaway_certificates

PROG = "covault run"


class _Interrupted(BaseException):
    pass


def _raise_interrupted(signum, frame) -> None:
    raise _Interrupted


def generated_config(config: ConsortiumConfig, ports: dict[str, int], certs: Path | None) -> str:
    """TOML text of ``config`` with loopback addresses and the given certificate directory; the
    parties are written in ``config.names`` order, so the data parties keep their order."""
    q = json.dumps  # a JSON string is a valid TOML basic string
    lines = [
        f"protocol = {q(config.protocol)}",
        f"timeout = {config.timeout!r}",
        f"frac_bits = {config.frac_bits}",
        f"compute = [{', '.join(q(c) for c in config.compute)}]",
    ]
    if config.provider:
        lines.append(f"provider = {q(config.provider)}")
    if config.dealer:
        lines.append(f"dealer = {q(config.dealer)}")
    lines.append("[tls]")
    lines.append("plaintext = true" if certs is None else f"certs = {q(str(certs))}")
    for name in config.names:
        lines += [f"[parties.{q(name)}]", f"address = {q(f'{HOST}:{ports[name]}')}"]
    return "\n".join(lines) + "\n"


class _Party(Child):
    def __init__(self, name: str, proc: subprocess.Popen):
        super().__init__(name, proc)
        self.proc = proc  # the same process, typed as a Popen (its stdin pipe)
        self.pumps: list[threading.Thread] = []


def _pump(stream: IO[bytes], prefix: str, out: IO[str], lock: threading.Lock) -> None:
    with contextlib.suppress(ValueError, OSError):
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with lock:
                out.write(f"{prefix}{line}\n")
                out.flush()
    stream.close()


def run_consortium(
    config_path: str | os.PathLike,
    script: str | os.PathLike,
    *,
    transcript: str | os.PathLike | None = None,
    job: str | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
) -> int:
    """Run ``script`` at every party of the config at ``config_path`` (see module doc); exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        config = load_config(config_path)
        order = config.names
        if not Path(script).is_file():
            raise ConfigError(f"script {script} not found")
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=err, flush=True)
        return EXIT_USAGE
    previous = signal.signal(signal.SIGINT, _raise_interrupted)
    previous_term = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        with contextlib.ExitStack() as stack:
            certs = None if config.plaintext else stack.enter_context(throwaway_certificates(order))
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="covault-run-")))
            return _launch(config, order, Path(script), certs, tmp, transcript, job, out, err)
    except _Interrupted:  # raised before the parties started
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


def _launch(config, order, script, certs, tmp, transcript, job, out, err) -> int:
    listeners = {name: open_listener(HOST) for name in order}
    parties: dict[str, _Party] = {}
    lock = threading.Lock()
    try:
        ports = {n: s.getsockname()[1] for n, s in listeners.items()}
        cfg_path = tmp / "consortium.toml"
        cfg_path.write_text(generated_config(config, ports, certs))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        busy = len(order) - len(config.data)  # data parties hold no shares: they barely compute
        job = job or secrets.token_hex(8)
        for name in order:
            threads = 1 if name in config.data else max(1, (os.cpu_count() or 1) // busy)
            env = dict(env, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(threads)))
            fd = listeners[name].fileno()
            cmd = [sys.executable, "-m", "covault", "party", str(cfg_path), "--as", name, str(script)]
            cmd += ["--job", job, "--listen-fd", str(fd), "--exit-with-stdin"]
            if transcript is not None:
                cmd += ["--transcript", str(transcript)]
            proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(fd,),
                env=env,
                start_new_session=True,
            )
            party = parties[name] = _Party(name, proc)
            for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
                t = threading.Thread(target=_pump, args=(stream, f"[{name}] ", sink, lock), daemon=True)
                t.start()
                party.pumps.append(t)
        for s in listeners.values():
            s.close()
        return _supervise(parties, err, lock)
    except _Interrupted:
        with lock:
            err.write(f"{PROG}: interrupted: stopping every party\n")
            err.flush()
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the clean-up
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for s in listeners.values():
            s.close()
        _stop_all(parties)


def _supervise(parties: dict[str, _Party], err: IO[str], lock: threading.Lock) -> int:
    clock = FailureClock()
    stalled: list[str] = []
    while True:
        codes = {n: p.exitcode for n, p in parties.items()}
        running = [n for n, c in codes.items() if c is None]
        if not running:
            break
        if any(c not in (None, 0) for c in codes.values()):
            clock.failed(rest_stalled=len(running) == 1)
            if clock.expired():
                stalled = running
                who = f"party {running[0]!r}" if len(running) == 1 else f"parties {running}"
                with lock:
                    err.write(f"{PROG}: {who} still running after the failure (stalled?): terminating\n")
                break
        time.sleep(0.05)
    _stop_all(parties)
    codes = {n: p.exitcode for n, p in parties.items()}
    bad = {n: c for n, c in codes.items() if c != 0}
    with lock:
        for n, c in bad.items():
            why = "was still running: terminated" if n in stalled else "failed"
            err.write(f"{PROG}: party {n!r} {why} (exit code {c})\n")
        err.flush()
    return EXIT_FAILED if bad else EXIT_OK


def _stop_all(parties: dict[str, _Party]) -> None:
    """Terminate what still runs (SIGTERM, then SIGKILL), reap every process, drain its output."""
    try:
        stop(parties.values(), done=parties)
    finally:
        for p in parties.values():
            if p.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    p.proc.stdin.close()
            for t in p.pumps:
                t.join(2.0)
