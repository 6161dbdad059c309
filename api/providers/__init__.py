"""Provider ingestion (admin) and the provider read models' endpoints."""
