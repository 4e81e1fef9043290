"""neurosym: a fine-tuning job that routes each batch to a LoRA step or a TextGrad prompt rewrite."""

__version__ = "0.1.0"
