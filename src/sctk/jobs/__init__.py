"""Durable jobs: the queue in the database, workers, executors, job kinds and job events."""
