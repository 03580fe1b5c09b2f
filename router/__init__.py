"""ttc-router: per-request compute allocation for LLM traffic."""

__version__ = "0.1.0"
