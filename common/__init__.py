"""Shared plumbing, the bottom layer (imports nothing else of the project): the error types for bad input, atomic
I/O, manifests, the stage directory every stage's output goes through (`stage.py`) and the names of what stages
write (`layout.py`), typed configs, what a command needs from a cluster job, and the Ray runner."""
