"""One module per page; each registers itself with Dash's page registry when imported."""
