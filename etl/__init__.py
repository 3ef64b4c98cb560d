"""The ETL: read -> map -> validate -> reproject -> locate -> store -> rollups; the only way data enters the store."""
