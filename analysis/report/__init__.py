"""`specialize report`: one self-contained HTML page of a run, a demo or a study.

Read top to bottom: `discover` finds the run directories under the given one by their manifest's `kind`;
`elements` holds what a page is made of (sections, figures as embedded PNG, tables with rounding and
summaries of big tables); one module per part of the study builds its sections (`provenance`: what was run
and the data; `training`: curves and intact accuracy; `lesioning`: lesion sweeps and segregation; `study`:
the seed aggregation; `generic`: any other analysis kind, e.g. decoding, RSA, feature visualisation);
`build` orders the sections, renders `templates/report.html.j2` with jinja2 and writes the page atomically.
"""
