"""SageMaker's /invocations: one route that dispatches by the body's shape."""
