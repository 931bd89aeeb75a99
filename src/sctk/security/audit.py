"""The old name of `sctk.security.audit_log` (the hash-chained audit log), kept for one
release so that code importing `sctk.security.audit` (an installed plugin's, or a module
not yet moved over) keeps working; it is the same module object, not a copy."""

import sys

from sctk.security import audit_log

sys.modules[__name__] = audit_log
