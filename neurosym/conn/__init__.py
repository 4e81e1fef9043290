"""Compiled neural networks (CoNNs) beside the language model.

A CoNN is a transformer whose attention and MLP weights are set by construction from a small
RASP-like program, so it executes a rule exactly for every input up to the length it was compiled
for, with no training. ``ConnGate`` hands the next tokens of ``model.generate`` to a CoNN when the text
reaches a rule's trigger (β = 1) and back to the language model once the answer is written (β = 0).

Modules: ``program`` (the language), ``compiler`` (program -> weights), ``model`` (the nn.Module),
``programs`` (parity, reverse, add, subtract), ``ops`` (the registry of validated, compiled operations and
their triggers: ``register`` adds your own), ``expr`` (reading an expression before ``=``), ``gate``
(the LogitsProcessor), ``precision`` (margins and exact lengths below float32), ``library`` (Tracr's
``lib.py`` programs), ``cli`` (``neurosym conn ...`` and ``neurosym generate``).
"""
from neurosym.conn.errors import ConnInputError

_LAZY = {"CompiledProgram": "compiler", "compile_program": "compiler",  # torch
         "OPS": "ops", "ConnOp": "ops", "OpSpec": "ops", "get_op": "ops", "register": "ops", "unregister": "ops",
         "ConnGate": "gate", "GateEvent": "gate", "StopWhenAnswered": "gate"}  # transformers


def __getattr__(name: str):
    """Loaded on first use: the compiler needs torch and the gate transformers, and a CLI that only
    lists its verbs (``neurosym --help``) needs neither."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"neurosym.conn.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'neurosym.conn' has no attribute {name!r}")


__all__ = ["CompiledProgram", "compile_program", "ConnInputError", "ConnGate", "GateEvent", "StopWhenAnswered",
           "OPS", "ConnOp", "OpSpec", "get_op", "register", "unregister"]
