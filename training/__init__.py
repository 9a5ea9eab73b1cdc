"""Datasets (windows, features, labels, splits), model training and evaluation."""
