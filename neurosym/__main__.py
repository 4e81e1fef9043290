"""``python -m neurosym``: the CLI, also as a module for launchers that run one, e.g.
``accelerate launch -m neurosym train CONFIG`` or ``torchrun --nproc_per_node 2 -m neurosym train CONFIG``."""
import atexit
import os
import sys

from neurosym.cli import main
from neurosym.runtime import launched
from neurosym.runtime.launch import record_exit

code = 1  # an exception that escapes main() ends the process with 1
try:
    code = main()
except SystemExit as exc:  # argparse
    code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    if not launched():
        raise
finally:
    record_exit(code)  # under `--nproc N`, the launcher exits with the main process's code
if launched():
    # One process of a job that had finished (checkpoint saved, every process past the last barrier,
    # the process group destroyed) sometimes aborted in torch's C++ teardown at interpreter exit
    # ("terminate called without an active exception"; 2 of 6 runs of a 2-process FSDP job on CPU),
    # and the launcher reported the finished job as failed. Everything the run owns is closed by now:
    # run the atexit handlers (W&B, logging), then leave without the interpreter's and C++'s teardown.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
