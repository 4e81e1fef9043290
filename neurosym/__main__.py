"""``python -m neurosym``: the CLI, also as a module for launchers that run one, e.g.
``accelerate launch -m neurosym train CONFIG`` or ``torchrun --nproc_per_node 2 -m neurosym train CONFIG``."""
import sys

from neurosym.cli import main

sys.exit(main())
