"""Storage: database engine and sessions, ORM models, migrations, the data-directory layout."""
