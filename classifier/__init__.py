"""Models behind the router: the prompt embedder and the per-arm predictor."""
