"""Importers: other tools' experiment definitions turned into sweepyard pipeline configs.

``katib``: a Katib Experiment (``kubeflow.org/v1beta1``), ``make import KATIB=experiment.yaml``.
"""
