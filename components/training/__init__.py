"""Training machinery: the LightningModule, resume across runs, Ray Tune callbacks."""
