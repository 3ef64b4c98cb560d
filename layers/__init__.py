"""One module per map layer (what to query for given filters, how to draw it) and their registry."""
