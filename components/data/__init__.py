"""Training data on the shared disk: fetched once per content version, read by every trial.

* :mod:`components.data.sources`: where data comes from (a folder or file, ``gs://``, a database
  query), each listing a version and downloading it;
* :mod:`components.data.storage`: the versions on the shared disk (``data/<dataset>/<hash>/``:
  written beside, manifested, then marked complete; locked while one fetcher writes);
* :mod:`components.data.progress`: the download's progress line.

The ``fetch`` step (``python -m components.fetch``) drives them.
"""
