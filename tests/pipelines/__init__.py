"""Tests of ``pipelines/``, one module per part it tests."""
