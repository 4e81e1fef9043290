"""The symbolic update: the update kind itself (``update``: sync/async, availability, checkpoint),
its TextGrad step and prompt templates (``textgrad_step``), and the student as a TextGrad engine
(``student``)."""
from neurosym.updates.symbolic.update import SymbolicUpdate

__all__ = ["SymbolicUpdate"]
