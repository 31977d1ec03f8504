"""Logs, Prometheus metrics and OpenTelemetry tracing: what an operator sees of a running server."""
