"""The HTTP layer: middlewares (request id, problem details, authentication, limits) and
handlers that parse, call a service, and render. See docs/http-api.md."""
