"""HTTP entry points of im-api (thin: parse, call a service, map the result)."""
