"""The contract between pipeline and dashboard: the work grid, product schemas and catalog."""
