"""The store: settings, database engines, the embedded PostGIS cluster, the schema and its code dictionaries."""
