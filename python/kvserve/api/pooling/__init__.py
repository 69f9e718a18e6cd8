"""Pooling APIs (vLLM's): /pooling, /classify, /score, /rerank, and what they share with embeddings."""
