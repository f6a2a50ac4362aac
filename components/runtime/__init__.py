"""The services a stage talks to: MLflow tracking, the Ray cluster, local servers, Ray Job submission."""
