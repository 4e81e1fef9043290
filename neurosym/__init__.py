"""neurosym: a fine-tuning job that routes each batch to a LoRA step or a TextGrad prompt rewrite."""
import os as _os

# textgrad imports litellm, which fetches a price map from the network unless told not to.
_os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

__version__ = "0.1.0"
