"""``neurosym train CONFIG --nproc N``: the launcher process, torchrun's own agent with our exit code.

torchrun reports any failed worker as exit status 1, so a user error (2) or a run stopped by Ctrl-C
or SIGTERM and saved (130) would read as a crash to a script or a scheduler. ``--nproc N`` therefore
replaces the ``neurosym`` process (``os.execve``: same pid, so a signal to it reaches the job, and
killing it kills the job) with ``python -m neurosym.runtime.launch TORCHRUN-ARGS``, which runs torchrun's
``run`` unchanged and then exits with the main process's exit code. The main process (rank 0) leaves
that code in the file named by ``NEUROSYM_LAUNCH_EXIT_FILE``, which only this launcher sets, in the
environment it hands to its own new image (our process's ``os.environ`` is never written).

Ctrl-C in a terminal reaches every process of the job at once. torchrun would pass its own SIGINT on
to the workers, a second SIGINT for them ("abort now, without a checkpoint"); here the launcher
passes SIGTERM instead, which for a worker means the same as the first Ctrl-C: stop after this step
and save. A second Ctrl-C still aborts at once.
"""
from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path

EXIT_FILE_ENV = "NEUROSYM_LAUNCH_EXIT_FILE"
# torchrun's default is SIGTERM,SIGINT,SIGHUP,SIGQUIT; SIGINT is ours (see the module's docstring)
_SIGNALS_TO_HANDLE = "SIGTERM,SIGHUP,SIGQUIT"


def exec_launcher(nproc: int, flags: list) -> None:
    """Become the launcher of ``nproc`` processes on this machine, each running ``neurosym FLAGS``
    (never returns)."""
    # a name nobody can guess, created by the main process alone (O_EXCL): nothing to clean up
    # when the launcher is killed, since its processes die with it before they could write it
    exit_file = Path(tempfile.gettempdir()) / f"neurosym-exit-{secrets.token_hex(16)}"
    args = ["--standalone", "--nproc_per_node", str(nproc), "-m", "neurosym", *flags]
    print(f"launching {nproc} processes: torchrun {' '.join(args)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    env = {**os.environ, EXIT_FILE_ENV: str(exit_file)}
    os.execve(sys.executable, [sys.executable, "-m", "neurosym.runtime.launch",
                               "--signals-to-handle", _SIGNALS_TO_HANDLE, *args], env)


def record_exit(code) -> None:
    """In a process of a job started by ``--nproc``: the main one leaves its exit code for the launcher."""
    path = os.environ.get(EXIT_FILE_ENV)
    if not path or os.environ.get("RANK") != "0":
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:  # the launcher falls back on torchrun's view of the failure
        return
    with os.fdopen(fd, "w") as f:
        f.write(str(code if isinstance(code, int) else 1))


def _status(exitcode: int) -> int:
    """A process killed by signal S reads as 128+S, as a shell reports it."""
    return 128 - exitcode if exitcode < 0 else exitcode


def _read_and_remove(exit_file: Path | None) -> int | None:
    """The main process's exit code (None if it left none: it crashed or was killed); the file goes."""
    if exit_file is None:
        return None
    try:
        return int(exit_file.read_text().strip())
    except (OSError, ValueError):
        return None
    finally:
        exit_file.unlink(missing_ok=True)


def main(argv: list) -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    exit_file = Path(os.environ[EXIT_FILE_ENV]) if os.environ.get(EXIT_FILE_ENV) else None
    received = []

    def on_sigint(signum, frame):
        received.append(signum)
        # the agent's own handling of a death signal, with SIGTERM as the one passed to the workers;
        # raised again by a second Ctrl-C, it ends the graceful wait (the workers die with us)
        raise SignalException(f"process {os.getpid()} got SIGINT", sigval=signal.SIGTERM)

    signal.signal(signal.SIGINT, on_sigint)
    failure, stopped_by = None, None
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        failure = _status(exc.get_first_failure()[1].exitcode)  # a crash (1), or killed by a signal
    except SignalException as exc:
        stopped_by = received[0] if received else int(exc.sigval)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        main_code = _read_and_remove(exit_file)
    if stopped_by is not None:  # 130 if the main process stopped and saved, 0 if it had finished
        return main_code if main_code is not None else 128 + stopped_by
    if failure is not None:  # the main process's own verdict (2 for a user error, 130 stopped) first
        return main_code or failure
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
