"""Training data: record formats and readers, rendering with loss masking, packing, resumable samplers."""
from neurosym.data.errors import DataError
from neurosym.data.examples import Example, LoadReport, TrainSet, load_examples
from neurosym.data.render import Encoded, Renderer
from neurosym.data.sampler import EpochSampler, MixtureSampler
from neurosym.data.collate import collate, forward_inputs, make_micro_batches

__all__ = ["DataError", "Example", "LoadReport", "TrainSet", "load_examples", "Encoded", "Renderer",
           "EpochSampler", "MixtureSampler", "collate", "forward_inputs", "make_micro_batches"]
