"""Analyses on the extracted tables or re-run models: identifiability, class building,
perturbations, key-value memories, explainability, linear probes, and the shared statistics."""
