"""Run every party of a computation in its own OS process, connected by the TCP transport.

Steps of :func:`run_processes`:

1. check that ``program`` pickles by reference (a module-level function);
2. unless TLS is switched off, create throw-away certificates: a fresh CA and one certificate
   per party in a temporary directory (a few milliseconds; the CA key is deleted at once, the
   directory when the run ends);
3. start one process per party, data parties included (``spawn``: forking after numpy/OpenMP
   threads is unsafe); each loads the program and its TLS identity, binds a loopback listener on
   port 0 and reports the port over its pipe;
4. draw a random 16-byte session id with :mod:`secrets` and send it with the address map to
   every process; the processes connect pairwise over mutual TLS in the party order (compute
   parties, dealer, data parties: :func:`covault.transport.tcp.connect_mesh`) and run
   ``program(session)`` (:func:`party_session`);
5. collect each party's return value or error (type, message, traceback: exceptions are never
   pickled); after the first error the others get
   :data:`~covault.launch.supervisor.FAILURE_GRACE` s to report, or only
   :data:`~covault.launch.supervisor.SHORT_GRACE` s once every party still silent is one the
   reported errors name (a stalled party never reports);
6. make sure every process has exited: a party that never reported is terminated at once (so
   its peers stop waiting for it), the others get time to close their connections; then
   terminate, then kill (:func:`covault.launch.supervisor.stop`; also when the caller is
   interrupted); re-raise the root cause as
   :func:`covault.runtime.raise_first` does, with a note naming the parties that were stopped.

Party processes ignore SIGINT (the caller's process handles Ctrl-C and stops them) and exit on
their own if the caller's process disappears.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import importlib
import multiprocessing
import os
import pickle
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from covault import ring
from covault.errors import CovaultError, PeerError
from covault.launch.supervisor import Child, FailureClock, stop
from covault.transport.tcp import (
    HOST,
    SESSION_ID_BYTES,
    LateJoinGuard,
    TcpTransport,
    connect_mesh,
    open_listener,
)
from covault.transport.tls import TlsIdentity, throwaway_certificates, warn_plaintext

START_TIMEOUT = 60.0  # seconds for every process to start and report its port
EXIT_GRACE = 5.0  # after the last result, how long processes get to exit


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a party process (attached as ``__cause__``)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text


def _check_program(program: Callable) -> bytes:
    hint = (
        "transport='tcp' needs a module-level function (importable by name in a fresh process, "
        "not a lambda, closure or nested function)"
    )
    if not callable(program):
        raise CovaultError(f"{hint}; got the non-callable {program!r}")
    module = getattr(program, "__module__", None)
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if module == "__main__" and main_file is None:
        raise CovaultError(f"{hint}; {program!r} is defined in an interactive session")
    if getattr(main, "__spec__", None) is None and main_file is not None and not os.path.isfile(main_file):
        raise CovaultError(
            f"transport='tcp' starts each party with multiprocessing 'spawn', which re-imports the "
            f"main script, but {main_file!r} is not a file; run the program from a script or module"
        )
    try:
        return pickle.dumps(program)
    except Exception as exc:
        raise CovaultError(f"{hint}; {program!r} cannot be pickled: {exc}") from None


# -- party process ----------------------------------------------------------------------------------
def _describe(exc: BaseException) -> dict[str, Any]:
    failed_at = getattr(exc, "_covault_failed_at", None)
    try:
        message = str(exc)
    except Exception:
        message = f"<{type(exc).__qualname__} with unprintable message>"
    return {
        "module": type(exc).__module__,
        "type": type(exc).__qualname__,
        "message": message,
        "peer": getattr(exc, "party", None) if isinstance(exc, PeerError) else None,
        "is_peer_error": isinstance(exc, PeerError),
        "notes": [str(n) for n in getattr(exc, "__notes__", [])],
        "traceback": "".join(traceback.format_exception(exc)),
        "time": failed_at if isinstance(failed_at, float) else time.time(),
    }


def _watch_parent(conn: Connection) -> None:
    """Exit the process when the caller's process goes away (its pipe end closes)."""
    with contextlib.suppress(Exception):
        while True:
            conn.recv()
    os._exit(70)


def tune_process(parties_on_host: int) -> None:
    """Settings for a party process sharing this host with ``parties_on_host - 1`` busy others
    (compute parties and dealer; a data party, which holds no shares, counts as no one).

    - torch gets ``cores // parties`` threads: the int8 matmul engine is multi-threaded, and
      oversubscribed cores made a 3-party matmul twice slower (0.81 s vs 0.31 s, 1000^3). If
      torch is not imported yet, ``OMP_NUM_THREADS`` is set for when it is (importing it here
      cost each process ~1 s of CPU, even for programs without a matmul).
    - glibc keeps freed buffers of up to 32 MiB in the heap instead of returning them to the
      kernel, so the many same-sized temporaries of a protocol step do not page-fault afresh
      (cold 1M-value comparisons spent 0.3-0.45 s of 0.55 s CPU in page faults).
    """
    threads = max(1, (os.cpu_count() or 1) // max(1, parties_on_host))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD


@contextlib.contextmanager
def party_session(
    name: str,
    compute: Sequence[str],
    dealer: str | None,
    protocol: str,
    frac_bits: int,
    timeout: float,
    listener: socket.socket,
    addresses: Mapping[str, tuple[str, int]],
    session_id: bytes,
    *,
    tls: TlsIdentity | None = None,
    transcript_dir: str | os.PathLike | None = None,
    data: Sequence[str] = (),
    provider: str | None = None,
) -> Iterator[Any]:
    """Connect party ``name`` to its peers and yield its Session; every party runs this.

    The parties are ``compute``, ``dealer`` (if any) and the data parties ``data``, in this
    order; every party must be given the same names in the same order, and ``addresses`` for all.
    ``provider``: the correlated-randomness provider by name (:class:`~covault.session.Session`).
    On an exception in the body the peers are told that this party stops (they fail at once
    with a PeerError naming it); on success the connections are closed after the peers finish
    (up to ``timeout`` s). ``transcript_dir`` records every message sent
    (:mod:`covault.transport.transcript`).
    """
    from covault.session import Session
    from covault.transport.base import Network
    from covault.transport.transcript import TranscriptWriter

    compute, data = tuple(compute), tuple(data)
    order = (*compute, *((dealer,) if dealer else ()), *data)
    guard = LateJoinGuard()
    channels = connect_mesh(name, order, listener, addresses, session_id, timeout, tls=tls, guard=guard)
    transport = TcpTransport(name, channels, on_close=guard.stop)
    writer = None
    try:
        net = Network(transport, timeout=timeout)
        if transcript_dir is not None:
            peers = [p for p in order if p != name]
            info = {"peers": peers, "session": session_id.hex(), "protocol": protocol, "tls": tls is not None}
            writer = TranscriptWriter(transcript_dir, name, **info).attach(net)
        with ring.wrapping():
            yield Session(
                name,
                compute,
                protocol,
                net,
                dealer=dealer,
                frac_bits=frac_bits,
                data_parties=data,
                provider=provider,
            )
    except BaseException as exc:
        with contextlib.suppress(Exception):  # when it failed, not when the abort was done
            exc._covault_failed_at = time.time()
        transport.abort(f"{type(exc).__name__}: {exc}")
        raise
    else:
        transport.close(linger=timeout)
    finally:
        if writer is not None:
            writer.close()


def party_start(
    conn: Connection, name: str, program_bytes: bytes, certs: str | None
) -> tuple[Callable, TlsIdentity | None, socket.socket, dict, bytes] | None:
    """The start of a party process: load the program and the TLS identity (``certs``: its
    folder, or None without TLS), bind a loopback listener, report its port and wait for the
    start signal; ``(program, tls, listener, addresses, session id)``, or None when the caller
    is gone or the loading failed (the error is reported over ``conn``). Watches the caller's
    process from then on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:  # import the program's module and load TLS material before the start signal
        program = pickle.loads(program_bytes)  # noqa: S301 - bytes produced by our own caller
        tls = None
        if certs is not None:
            tls = TlsIdentity.from_dir(certs, name)
            tls.context(True)
            tls.context(False)
    except BaseException as exc:
        exc.add_note("while loading the program in the party process")
        conn.send(("error", _describe(exc)))
        return None
    listener = open_listener(HOST)
    conn.send(("port", listener.getsockname()[1]))
    try:
        _, addresses, session_id = conn.recv()
    except (EOFError, OSError, ValueError):
        listener.close()
        return None
    threading.Thread(target=_watch_parent, args=(conn,), name="covault-watch-parent", daemon=True).start()
    return program, tls, listener, addresses, session_id


def _party_main(
    conn: Connection,
    name: str,
    compute: tuple[str, ...],
    dealer: str | None,
    protocol: str,
    frac_bits: int,
    timeout: float,
    program_bytes: bytes,
    certs: str | None,
    transcript_dir: str | None,
    data: tuple[str, ...] = (),
    provider: str | None = None,
) -> None:
    """Body of one party process."""
    busy = (*compute, dealer) if dealer else compute
    started = party_start(conn, name, program_bytes, certs)
    if started is None:
        return
    program, tls, listener, addresses, session_id = started
    tune_process(len(busy) if name in busy else (os.cpu_count() or 1))  # a data party: 1 thread
    try:
        args = (name, compute, dealer, protocol, frac_bits, timeout, listener, addresses, session_id)
        kw = {"tls": tls, "transcript_dir": transcript_dir, "data": data, "provider": provider}
        with party_session(*args, **kw) as session:
            result = program(session)
            try:
                conn.send(("result", result))
            except Exception as exc:
                err = CovaultError(f"the result of party {name!r} cannot be sent to the caller: {exc}")
                with contextlib.suppress(Exception):
                    conn.send(("error", _describe(err)))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", _describe(exc)))
    finally:
        listener.close()


# -- caller side -------------------------------------------------------------------------------------
class _Party(Child):
    def __init__(self, name: str, process: multiprocessing.process.BaseProcess, conn: Connection):
        super().__init__(name, process)
        self.conn = conn


def run_processes(
    program: Callable,
    compute: Sequence[str],
    dealer: str | None,
    protocol: str,
    frac_bits: int,
    timeout: float,
    *,
    tls: bool = True,
    transcript_dir: str | os.PathLike | None = None,
    data: Sequence[str] = (),
    provider: str | None = None,
) -> dict[str, Any]:
    """Run ``program(session)`` in one process per party over loopback TCP; ``{party: result}``.

    ``data`` names the data parties (one process each, like every other party); ``provider``
    the correlated-randomness provider every party's Session uses. With ``tls``
    (the default) parties talk mutual TLS 1.3 with throw-away certificates (one per party);
    ``tls=False`` warns loudly and sends plaintext.
    """
    program_bytes = _check_program(program)
    compute, data = tuple(compute), tuple(data)
    order = (*compute, *((dealer,) if dealer else ()), *data)
    args = (program_bytes, compute, dealer, data, order, protocol, frac_bits, timeout)
    if not tls:
        warn_plaintext("covault.run(transport='tcp', tls=False)")
        return _run_processes(*args, None, transcript_dir, provider)
    with throwaway_certificates(order) as certs:
        return _run_processes(*args, certs, transcript_dir, provider)


def _run_processes(
    program_bytes, compute, dealer, data, order, protocol, frac_bits, timeout, certs, transcript_dir, provider
):
    def party_args(name: str) -> tuple:
        args = (name, compute, dealer, protocol, frac_bits, float(timeout), program_bytes)
        return (
            *args,
            None if certs is None else str(certs),
            None if transcript_dir is None else str(transcript_dir),
            data,
            provider,
        )

    return supervise(order, _party_main, party_args, timeout)


def supervise(
    order: Sequence[str], target: Callable, party_args: Callable[[str], tuple], timeout: float
) -> dict[str, Any]:
    """Start ``target(conn, *party_args(name))`` in one ``spawn`` process per party, gather the
    ports they report, send every one the address map and a fresh session id, collect their
    results (steps 3-6 of the module docstring) and return ``{party: result}``; the root cause
    of a failure is raised naming its party."""
    ctx = multiprocessing.get_context("spawn")
    parties: dict[str, _Party] = {}
    results: dict[str, Any] = {}
    errors: dict[str, dict] = {}
    patience = 0.0  # interrupted or failed to start: stop every process at once
    try:
        for name in order:
            here, there = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=target, args=(there, *party_args(name)), name=f"covault-{name}", daemon=True
            )
            parties[name] = _Party(name, proc, here)
            try:
                proc.start()
            finally:
                there.close()
        addresses = {n: (HOST, port) for n, port in _gather_ports(parties).items()}
        session_id = secrets.token_bytes(SESSION_ID_BYTES)
        for p in parties.values():
            with contextlib.suppress(OSError):  # a process that died is reported by _collect
                p.conn.send(("start", addresses, session_id))
        _collect(parties, results, errors)
        patience = EXIT_GRACE + float(timeout)
    finally:
        stopped = _reap(parties, {*results, *errors}, patience)
    if errors:
        _raise_root(errors, stopped)
    return {n: results.get(n) for n in order}


def _gather_ports(parties: dict[str, _Party]) -> dict[str, int]:
    ports: dict[str, int] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while len(ports) < len(parties):
        waiting = [p for n, p in parties.items() if n not in ports]
        left = deadline - time.monotonic()
        if left <= 0:
            raise CovaultError(
                f"party processes {[p.name for p in waiting]} did not start within {START_TIMEOUT:g} s"
            )
        wait([p.conn for p in waiting] + [p.process.sentinel for p in waiting], timeout=left)
        for p in waiting:
            try:
                if p.conn.poll():
                    kind, value = p.conn.recv()
                    if kind == "error":
                        _raise_root({p.name: value})
                    ports[p.name] = int(value)
                    continue
            except (EOFError, OSError):
                pass
            if not p.process.is_alive():
                raise CovaultError(
                    f"party {p.name!r}: process failed to start (exit code {p.process.exitcode})"
                )
    return ports


def _collect(parties: dict[str, _Party], results: dict[str, Any], errors: dict[str, dict]) -> None:
    """Fill ``results`` and ``errors`` as the parties report; after the first error the others get
    the supervisor's failure grace, shortened once every party still silent is named by an error."""
    pending = dict(parties)
    clock = FailureClock()
    while pending and not clock.expired():
        waitables = [p.conn for p in pending.values()] + [p.process.sentinel for p in pending.values()]
        wait(waitables, timeout=clock.left())
        for name, p in list(pending.items()):
            msg = None
            try:
                if p.conn.poll():
                    msg = p.conn.recv()
            except (EOFError, OSError):
                msg = None
            except Exception as exc:  # a result that cannot be unpickled here
                msg = ("error", _describe(CovaultError(f"cannot load the result of party {name!r}: {exc}")))
            if msg is None and p.process.is_alive():
                continue
            del pending[name]
            if msg is None:
                p.process.join(1.0)
                err = CovaultError(
                    f"party {name!r}: process exited (code {p.process.exitcode}) without reporting a result"
                )
                errors[name] = _describe(err)
            elif msg[0] == "result":
                results[name] = msg[1]
            else:
                errors[name] = msg[1]
        if errors:
            blamed = {e["peer"] for e in errors.values()}
            clock.failed(rest_stalled=bool(pending) and blamed.issuperset(pending))


def _reap(parties: dict[str, _Party], reported: set[str], patience: float) -> list[str]:
    """Make sure no party process outlives the run (:func:`covault.launch.supervisor.stop`); the
    parties stopped without having reported."""
    try:
        return stop(parties.values(), done=reported, patience=patience, kill_grace=2.0)
    finally:
        for p in parties.values():
            p.conn.close()


def _rebuild(info: dict, party: str) -> BaseException:
    """The original exception type for covault errors and builtin exceptions, else CovaultError."""
    cls = None
    if info["module"] == "builtins":
        cls = getattr(builtins, info["type"], None)
    elif info["module"] == "covault" or info["module"].startswith("covault."):
        with contextlib.suppress(Exception):
            cls = getattr(importlib.import_module(info["module"]), info["type"])
    exc: BaseException | None = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        if issubclass(cls, PeerError):
            exc = cls.__new__(cls)
            Exception.__init__(exc, info["message"])
            exc.party = info["peer"]
        else:
            with contextlib.suppress(Exception):
                exc = cls(info["message"])
    if exc is None:
        exc = CovaultError(f"{info['type']} at party {party!r}: {info['message']}")
    for note in info["notes"]:
        exc.add_note(note)
    exc.__cause__ = RemoteTraceback(info["traceback"])
    return exc


def _raise_root(errors: dict[str, dict], stopped: Sequence[str] = ()) -> None:
    order = sorted(errors, key=lambda n: errors[n]["time"])
    root = next((n for n in order if not errors[n]["is_peer_error"]), order[0])
    exc = _rebuild(errors[root], root)
    if not any(f"at party {root!r}" in n for n in getattr(exc, "__notes__", [])):
        exc.add_note(f"raised at party {root!r}")
    if stopped:
        who = f"party {stopped[0]!r} was" if len(stopped) == 1 else f"parties {list(stopped)} were"
        exc.add_note(f"{who} still running without reporting after the failure: stopped (stalled?)")
    raise exc
