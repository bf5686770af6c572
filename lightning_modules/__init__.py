"""Models and their training, everything a trained network is made of and written with: VGG16 (`vgg`) and its layer
names (`layer_names`), the output heads (`heads`), the typed training config (`config`), the LightningModule (`module`),
the training run (`train`: Lightning Trainer, callbacks, resume; `cli`: `specialize train`), loggers (`loggers`: CSV
and W&B), Slurm pre-emption (`preemption`), checkpoint I/O (`run_io`) and `checkpoint.load_model`, which every analysis
uses to read a trained network."""
