"""The two kinds of update the loop can take for a batch: `lora` (gradient) and `symbolic` (prompt)."""
