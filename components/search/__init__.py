"""Adaptive search with Optuna: the search spec, the study on the shared disk, rounds of suggestions.

Runs in the sweepyard image (never imports hera or kfp). :mod:`.spec` is pure types the config
embeds; :mod:`.study` and :mod:`.rounds` import Optuna when called.
"""
