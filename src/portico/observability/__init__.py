"""Logs (and later metrics and tracing)."""
