"""Sweep definitions and their compilers, validator and backends (never imports torch)."""
