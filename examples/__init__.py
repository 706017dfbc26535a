"""Trainers that plug into sweepyard through its public contracts (see README, "Sweep your own model")."""
