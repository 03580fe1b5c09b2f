"""Generated from protos/ by `python -m router.api.protogen`."""
