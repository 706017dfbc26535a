"""Steps of a sweep, run inside the image: each a function plus a ``python -m`` CLI.

Never imports hera or kfp (DESIGN.md).
"""
