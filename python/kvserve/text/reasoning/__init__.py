"""Reasoning parsers: a model's thinking -> `reasoning`, apart from its answer."""
