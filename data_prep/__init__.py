"""Ingestion scripts: run as ``python -m data_prep.<module>``."""
