"""``python -m neurosym``: the CLI, also as a module for launchers that run one, e.g.
``accelerate launch -m neurosym train CONFIG`` or ``torchrun --nproc_per_node 2 -m neurosym train CONFIG``."""
import sys

from neurosym.cli import main
from neurosym.runtime.launch import record_exit

code = 1  # an exception that escapes main() ends the process with 1
try:
    code = main()
except SystemExit as exc:  # argparse
    code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    raise
finally:
    record_exit(code)  # under `--nproc N`, the launcher exits with the main process's code
sys.exit(code)
