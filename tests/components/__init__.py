"""Tests of ``components/``, one module per part it tests."""
