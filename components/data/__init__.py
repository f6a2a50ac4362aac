"""Datasets: built-in generators (shapes, digits), the manifest and the datamodule."""
