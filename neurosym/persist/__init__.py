"""What is written to disk and must survive a crash: the run directory and its lock (``rundir``),
atomic checkpoints (``checkpoint``) of the run's counters (``state``), nested state as safetensors +
JSON without pickle (``serialization``), RNG states (``rng``), crash-safe writes (``atomic``) and the
rules for a folder or file the user names with ``--out`` (``safe_output``)."""
