"""Training-signal monitors (loss slope, gradient norm, plateau). Pure Python/torch, no I/O."""
