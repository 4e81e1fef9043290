"""Routers that decide, batch by batch, between a LoRA step and a symbolic update."""
