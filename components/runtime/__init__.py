"""Run-time support shared by the components: checkpoints, tracking, alerts, trial exit codes, storage."""
