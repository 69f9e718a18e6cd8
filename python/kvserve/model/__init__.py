"""Model implementations, weight loading and the model runner."""
