"""A small character-level transformer language model, trained through the Python contract."""
