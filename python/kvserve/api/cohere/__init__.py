"""Cohere's embed API (v1 and v2) on the pooling models."""
