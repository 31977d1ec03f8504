"""Portico: a production AI API server with an OpenAI-compatible REST API."""

__version__ = "0.1.0"
