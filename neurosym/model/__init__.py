"""The student model: loading a base and its tokenizer (``load``), the adapter's PEFT config
(``adapters``), losses of rendered examples (``losses``), batched greedy generation (``generation``),
the optimizer (``optim``), ``neurosym merge`` (``merge``), and the local model schemes ``tiny://``
(``tiny``) and ``testbed://`` (``testbed``)."""
