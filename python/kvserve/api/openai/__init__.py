"""OpenAI-compatible routes: completions, chat completions, models."""
