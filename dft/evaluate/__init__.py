"""Evaluation: attribute readers, fairness metrics, curation and the report."""
