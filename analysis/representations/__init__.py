"""Representation analyses of trained networks: `activations` (named layers streamed to NPY on Ray), `decoding` of
held-out classes, `rsa` against behaviour, `visualize` (feature visualisation); `settings`; `cli`: the `activations`,
`decode`, `rsa` and `visualize` commands."""
