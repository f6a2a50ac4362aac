"""The pipeline's stages: one module each, `run(params, task)` and the stage's inputs and outputs."""
