"""The segregation analysis: lesion each task's top-ranked filters per layer, classify the test sets, and measure how
far the tasks have come apart (`run`: the stage; `lesion_eval`: per-image predictions of lesioned networks;
`indices`: accuracies, drops and the segregation index with bootstrap intervals; `task_groups`: the real tasks and
random pseudo-tasks; `settings`; `cli`: `specialize segregation` and `specialize figures`)."""
