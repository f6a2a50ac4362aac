"""The checkpoint format, the MLflow pyfunc and batch prediction."""
