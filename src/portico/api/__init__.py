"""HTTP routes, one module per resource, plus the middleware, dependencies, streaming and error handler."""
