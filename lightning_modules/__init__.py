"""Models and their training, everything a trained network is made of and written with: the model registry
(`architectures`: VGGs, AlexNet, ResNets), their lesion units (`units`), VGG16's layer names (`layer_names`), the
output heads (`heads`), the typed training config (`config`), the LightningModule (`module`), the training run
(`train`: Lightning Trainer, callbacks, resume; `cli`: `specialize train` and `specialize import`), loggers (`loggers`:
CSV and W&B), Slurm pre-emption (`preemption`), checkpoint I/O (`run_io`), `import_weights` (trained weights from
elsewhere) and `checkpoint.load_model`, which every analysis uses to read a trained network."""
