"""Rate limits, token quotas, budgets and concurrency per API key: one interface, a memory and a Redis backend."""
