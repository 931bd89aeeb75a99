"""The REST API: an app factory, one router per domain, problem+json errors."""
