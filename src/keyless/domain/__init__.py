"""Pure domain: names, policies, roles, conditions, delegation and lifetimes. No I/O lives here."""
