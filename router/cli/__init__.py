"""The `ttc-router` command line."""
