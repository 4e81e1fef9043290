"""Training data: record formats and readers, rendering with loss masking, packing, resumable samplers.

Collation (tensors, so torch) is loaded on first use: ``validate`` reads and renders data without it."""
from neurosym.data.errors import DataError
from neurosym.data.examples import Example, LoadReport, TrainSet, load_examples, load_splits
from neurosym.data.render import Encoded, Renderer
from neurosym.data.sampler import EpochSampler, MixtureSampler


def __getattr__(name: str):
    if name in ("collate", "forward_inputs", "make_micro_batches"):
        from neurosym.data import batching
        return getattr(batching, name)
    raise AttributeError(f"module 'neurosym.data' has no attribute {name!r}")


__all__ = ["DataError", "Example", "LoadReport", "TrainSet", "load_examples", "load_splits", "Encoded", "Renderer",
           "EpochSampler", "MixtureSampler", "collate", "forward_inputs", "make_micro_batches"]
