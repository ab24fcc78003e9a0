"""Names the CLI shows before any store is opened (this module loads nothing)."""

STORE_VARIABLE = "EXPRUN_STORE"  # the store to use when --store is not given
