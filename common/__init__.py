"""Shared plumbing, the bottom layer (imports nothing else of the project): the one error type for bad input,
atomic I/O, manifests, the output-directory guard and the Ray runner."""
