"""Policies, collection, the on-disk episode format and the DataModule."""
