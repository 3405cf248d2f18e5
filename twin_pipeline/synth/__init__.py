"""Synthetic multi-site long-COVID cohort generator (landing files + separate ground truth).

Entry points live in ``twin_pipeline.synth.generator``: ``generate_cohort`` and ``plant_bad_rows``.
Never imports dagster.
"""
