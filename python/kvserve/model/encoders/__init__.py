"""Encoder-only models (BERT family) and the sentence-transformers layout that describes their pooling."""
