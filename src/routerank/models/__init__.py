"""Model specs (`st:`, `hf:`, `gguf:`, short aliases) resolved in one place, without importing torch."""

from routerank.models.spec import ModelRef, resolve_model

__all__ = ["ModelRef", "resolve_model"]
