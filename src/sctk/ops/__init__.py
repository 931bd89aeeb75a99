"""Operations: the procedures that keep the service healthy (switches, leases, emergency)."""
