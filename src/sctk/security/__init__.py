"""Security: users and roles, tokens, brute-force defence, the keyring, the audit log."""
