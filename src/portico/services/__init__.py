"""Domain logic per resource; no HTTP types here."""
