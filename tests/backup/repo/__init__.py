"""Tests of the backup repository engine (sctk.backup.repo)."""
