"""MLflow registry: registration, the promotion gate, aliases and lineage."""
