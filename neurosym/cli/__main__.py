"""``python -m neurosym.cli``: the same as ``python -m neurosym`` (this module was a file before 0.2)."""
import runpy

runpy.run_module("neurosym", run_name="__main__", alter_sys=True)
