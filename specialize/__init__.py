"""specialize: train single- and multi-task VGG16s and measure how they split into task-specific parts."""

__version__ = "0.1.0"
