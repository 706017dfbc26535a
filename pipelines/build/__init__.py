"""The pipeline builders: one sweep config in, the manifests every backend receives out.

* :mod:`pipelines.build.steps`: each component's command line and environment, the contract both
  builders share; :mod:`pipelines.build.pods`: what a pod gets besides (placement, volumes, retries).
* :mod:`pipelines.build.argo`: the Argo Workflow (Hera); :mod:`pipelines.build.jobset`: a trial
  bigger than one node, as the JobSet its ``train`` step creates.
* :mod:`pipelines.build.kfp`: the Kubeflow Pipelines v2 package.
* :mod:`pipelines.build.compile`: a pipeline's files, validated, as ``make compile`` writes them.
"""
