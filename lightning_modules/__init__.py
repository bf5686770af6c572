"""Models and training: VGG16 (`vgg`), the training config (`config`), the LightningModule (`module`), `train`, and
`checkpoint.load_model` for every analysis."""
