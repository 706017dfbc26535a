"""Argo's manifest language, pure (no I/O): what the validator checks and the local runner runs.

* :mod:`pipelines.argo.tags` — ``{{...}}`` tags: the one scanner and substituter;
* :mod:`pipelines.argo.depends` — DAG ``depends``: one parser producing a tree;
* :mod:`pipelines.argo.expr` — the expr-lang subset (``when``, retry expressions);
* durations are :mod:`components.durations` (Go's grammar; the components read it too);
* :mod:`pipelines.argo.vocab` — task results, phases, retry policies, template kinds, loops.

Where Argo's own sources decide a case, the module says which source.
"""
