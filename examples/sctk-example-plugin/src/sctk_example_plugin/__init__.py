"""An example sctk plugin (see the package README)."""
