"""Wire models only: what requests and responses look like. OpenAI's shapes wherever OpenAI has the endpoint."""
