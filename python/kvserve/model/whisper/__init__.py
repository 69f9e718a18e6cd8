"""Whisper (speech to text): the encoder-decoder model and its decoder prompts."""
