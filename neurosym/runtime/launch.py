"""``neurosym train CONFIG --nproc N``: the launcher process, torchrun's own agent with our exit code.

torchrun reports any failed worker as exit status 1, so a user error (2) or a run stopped by Ctrl-C
or SIGTERM and saved (130) would read as a crash to a script or a scheduler. ``--nproc N`` therefore
replaces the ``neurosym`` process (``os.execve``: same pid, so a signal to it reaches the job, and
killing it kills the job) with ``python -m neurosym.runtime.launch TORCHRUN-ARGS``, which runs torchrun's
``run`` unchanged and then exits with the main process's exit code. The main process (rank 0) leaves
that code in the file named by ``NEUROSYM_LAUNCH_EXIT_FILE``, which only this launcher sets, in the
environment it hands to its own new image (our process's ``os.environ`` is never written).

Exit status of the job: 0 done, 2 bad input, 130 stopped and saved (the main process's own code, as one
process gives), 1 a crash or a failed exchange between processes, and ``128 + S`` when a process was
killed by signal ``S`` (137 for SIGKILL: out of memory, a node or a scheduler ending it), with a message
naming the process and the signal. 128 + S is what a shell, Kubernetes and SLURM report for one process
killed by S, so a scheduler reads a killed job as killed (retry it) and never as a user error (2);
torchrun alone says 1 for all of these. A process killed by a signal is the cause even when the
others then failed too (they lost the dead one, or were stopped by the launcher).

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


def accelerate_config_env(path: str, nproc: int | None) -> tuple[int, dict]:
    """``--accelerate-config FILE``: the number of processes (``nproc``, else the file's
    ``num_processes``) and the variables accelerate's own launcher derives from the file
    (``ACCELERATE_*``, ``FSDP_*``: what ``accelerate launch --config_file FILE`` hands its workers),
    those that differ from this process's environment. The translation is accelerate's
    (``_validate_launch_command`` merges the file into launch arguments, ``prepare_multi_gpu_env``
    turns them into variables), so a file means what it means to ``accelerate launch``. What this
    launcher cannot run (several machines, DeepSpeed, FSDP version 1) is refused here, before a
    process starts."""
    from neurosym.errors import UserError
    from neurosym.runtime.accelerate import _engine

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"--accelerate-config {path}: no such file. Write one with `accelerate config "
                        f"--config_file {path}` (or see the README, \"Models that do not fit on one GPU\").")
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import prepare_multi_gpu_env

    argv = ["--config_file", str(file)] + (["--num_processes", str(nproc)] if nproc else [])
    try:
        args = launch_command_parser().parse_args(argv + ["-m", "neurosym"])
        args = _validate_launch_command(args)[0]
    except (SystemExit, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--accelerate-config {path}: accelerate cannot read this config ({exc!r}); check it "
                        f"with `accelerate env --config_file {path}` or write it again with `accelerate config`.") from None
    if int(args.num_machines or 1) > 1:
        raise UserError(f"--accelerate-config {path}: num_machines is {args.num_machines}; --nproc starts the "
                        "processes of one machine. On several nodes run `accelerate launch --config_file "
                        f"{path} -m neurosym train ...` on each node (README, \"Several GPUs or nodes\").")
    if args.use_deepspeed:
        _engine("DEEPSPEED", {})  # raises, saying why and what to use instead
    env = prepare_multi_gpu_env(args)
    updates = {k: v for k, v in env.items() if os.environ.get(k) != v and k.startswith(("ACCELERATE_", "FSDP_"))}
    _engine("", updates)  # an FSDP version 1 config is refused now, not in every process
    return int(args.num_processes), updates


def exec_launcher(nproc: int, flags: list, extra_env: dict | None = None) -> None:
    """Become the launcher of ``nproc`` processes on this machine, each running ``neurosym FLAGS``
    with ``extra_env`` added to their environment (never returns)."""
    # a name nobody can guess, created by the main process alone (O_EXCL): nothing to clean up
    # when the launcher is killed, since its processes die with it before they could write it
    exit_file = Path(tempfile.gettempdir()) / f"neurosym-exit-{secrets.token_hex(16)}"
    args = ["--standalone", "--nproc_per_node", str(nproc), "-m", "neurosym", *flags]
    print(f"launching {nproc} processes: torchrun {' '.join(args)}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    env = {**os.environ, **(extra_env or {}), EXIT_FILE_ENV: str(exit_file)}
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


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# signals a process raises on itself when it crashes (a C++ abort when gloo loses its peer, a segfault):
# not something the machine or a scheduler did to it
_CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def killed_process(failures: dict) -> tuple[int, int] | None:
    """(rank, signal) of the first process of a failed job that a signal killed, or None.
    ``failures``: torchrun's ``{rank: ProcessFailure}`` (``exitcode`` < 0: killed by ``-exitcode``).
    Failures seen at once share a timestamp (whole seconds); among those, one killed by SIGTERM comes
    last: that is how torchrun stops the other processes once one has failed. A crash signal
    (SIGABRT, SIGSEGV, ...) is the process's own failure, not a kill: it is not counted here, nor is
    a SIGTERM seen with or after one (torchrun stopping the others after the crash)."""
    crashed = [f.timestamp for f in failures.values() if f.exitcode < 0 and -f.exitcode in _CRASH_SIGNALS]
    killed = sorted((f.timestamp, -f.exitcode == signal.SIGTERM, rank, -f.exitcode)
                    for rank, f in failures.items() if f.exitcode < 0 and -f.exitcode not in _CRASH_SIGNALS
                    # a SIGTERM at or after a crash is torchrun stopping the others, not a kill
                    and not (-f.exitcode == signal.SIGTERM and crashed and f.timestamp >= min(crashed)))
    return (killed[0][2], killed[0][3]) if killed else None


def job_status(failures: dict | None, stopped_by: int | None, main_code: int | None) -> tuple[int, str | None]:
    """The job's exit status and a message for the user (None: the processes said it themselves).

    ``failures``: torchrun's failed processes (None: none failed); ``stopped_by``: the signal that
    stopped the launcher (Ctrl-C, SIGTERM), if any; ``main_code``: what the main process exited with
    (None if it left no code: it crashed or was killed)."""
    if stopped_by is not None:  # 130 if the main process stopped and saved, 0 if it had finished
        return (main_code if main_code is not None else 128 + stopped_by), None
    if failures:
        if main_code == 2:  # the main process met bad input; the others fail after it (a lost peer, an abort)
            return 2, None
        killed = killed_process(failures)
        if killed is not None:
            rank, signum = killed
            name = _signal_name(signum)
            return 128 + signum, (
                f"error: process {rank} of the job was killed by {name} (signal {signum}); exit status "
                f"{128 + signum} (128+{signum}). This is no error in the input: the machine or a scheduler ended "
                f"the process{' (SIGKILL: often out of memory)' if signum == signal.SIGKILL else ''}. Checkpoints "
                "are only ever written whole: continue with `neurosym resume RUN_DIR` (on any number of processes).")
        first = min(failures.items(), key=lambda kv: (kv[1].timestamp, kv[1].exitcode == -signal.SIGTERM, kv[0]))[1]
        # the main process's own verdict (2 for a user error, 130 stopped, 1 a failed exchange) first
        return (main_code or _status(first.exitcode)), None
    return 0, None


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
    failures, stopped_by = None, None
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        failures = exc.failures  # a crash (1), a user error (2), or a process killed by a signal
    except SignalException as exc:
        stopped_by = received[0] if received else int(exc.sigval)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        main_code = _read_and_remove(exit_file)
    status, message = job_status(failures, stopped_by, main_code)
    if message:
        print(message, file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
