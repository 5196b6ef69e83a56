"""The streaming engine: generations, the batched delta writer, fan-out and resumable reading."""
