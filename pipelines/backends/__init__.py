"""Where a compiled sweep runs: ``local`` (this machine), ``argo`` (Argo Server), ``kfp`` (KFP API)."""
