"""Inside one trial: the message format, exact accounting, the handler pool, resource sampling."""
