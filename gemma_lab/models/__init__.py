"""Finding, converting, caching and loading Gemma models."""
