"""Tool-call parsers: a model family's markup -> content and calls (see base.py for the streaming rule)."""
