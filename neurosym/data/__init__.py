"""Training data: record formats, prompt/response rendering with loss masking, a resumable sampler."""
from neurosym.data.examples import DataError, Example, load_examples
from neurosym.data.render import Encoded, Renderer
from neurosym.data.sampler import EpochSampler
from neurosym.data.collate import collate

__all__ = ["DataError", "Example", "load_examples", "Encoded", "Renderer", "EpochSampler", "collate"]
