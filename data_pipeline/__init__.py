"""Datasets to FFCV: synthetic face/object/food/car images, real image folders, loaders and the DataModule."""
