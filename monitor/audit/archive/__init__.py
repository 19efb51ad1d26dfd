"""The governance archive (`telesafe audit archive`): one verified copy of every
instance's ledger, rebuilt from the audit mirror. See docs/audit-ledger.md ("The
governance archive")."""
