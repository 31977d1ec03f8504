"""API keys: their format, hashing, and turning a request's key into a principal."""
