"""The integration gateway: idempotent, bounded calls to customer backends."""
