"""Trainers that ship with sweepyard (the reference digits MLP); yours may live anywhere."""
