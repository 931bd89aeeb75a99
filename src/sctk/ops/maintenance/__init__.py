"""The maintenance guide's scheduled procedures, one module per schedule group."""
