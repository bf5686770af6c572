"""Analyses of trained and lesioned networks: `segregation/` (top-fraction lesions, indices with bootstrap intervals),
`representations/` (activations, decoding, RSA, feature visualisation), `bootstrap` (the hierarchical bootstrap),
`seeds` (a study's aggregation across seeds), `figures`, and `report/` (the HTML report of every stage)."""
