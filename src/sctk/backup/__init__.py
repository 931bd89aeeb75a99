"""Backups: the repository engine (`repo/`) and the sctk side built on it (snapshots of the
data directory, the catalog cache, verification, retention, off-site copies, restore)."""
