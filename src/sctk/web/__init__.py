"""The web dashboard: static pages and small JavaScript modules that call the REST API."""
