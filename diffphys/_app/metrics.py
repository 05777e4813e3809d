"""Summary metrics suited to a non-Gaussian prior: support recovery (sparsity) and edge location (total variation).

Thresholds are relative to the truth, so that the numbers mean the same on any case: a cell is in the
support when its magnitude exceeds ``fraction`` of the true peak; an edge is a jump between
neighbouring cells larger than ``fraction`` of the true field's range.
"""

from __future__ import annotations

import numpy as np

__all__ = ["edge_metrics", "prior_metrics", "support_metrics"]


def support_metrics(truth, analysis, fraction: float = 0.1) -> dict:
    """Precision and recall of the support (cells above ``fraction`` × the true peak magnitude)."""
    truth, analysis = np.abs(np.asarray(truth)), np.abs(np.asarray(analysis))
    threshold = fraction * float(truth.max())
    true, found = truth > threshold, analysis > threshold
    hits = int(np.sum(true & found))
    return {
        "threshold": threshold,
        "true_support": int(true.sum()),
        "estimated_support": int(found.sum()),
        "precision": hits / int(found.sum()) if found.any() else None,
        "recall": hits / int(true.sum()) if true.any() else None,
    }


def _edges(field, threshold):
    return np.flatnonzero(np.abs(np.diff(field)) > threshold)


def edge_metrics(truth, analysis, spacing: float, fraction: float = 0.2) -> dict:
    """1D: the true edges (jumps above ``fraction`` × the true range) and the mean distance from each to the
    nearest edge of the analysis (same threshold), in units of the coordinate."""
    truth, analysis = np.asarray(truth), np.asarray(analysis)
    threshold = fraction * float(truth.max() - truth.min())
    true, found = _edges(truth, threshold), _edges(analysis, threshold)
    error = None
    if len(true) and len(found):
        error = float(np.mean([np.min(np.abs(found - e)) for e in true]) * spacing)
    return {"threshold": threshold, "true_edges": len(true), "estimated_edges": len(found),
            "edge_location_error": error}


def prior_metrics(kind: str, truth, analysis, grid) -> dict:
    """The metrics of ``kind``'s prior, plus the relative error ‖a − t‖/‖t‖ (``None`` for a zero truth)."""
    truth, analysis = np.asarray(truth), np.asarray(analysis)
    scale = float(np.linalg.norm(truth))
    metrics = {"relative_error": float(np.linalg.norm(analysis - truth)) / scale if scale > 0 else None}
    if kind in ("l1", "elastic_net"):
        metrics["support"] = support_metrics(truth, analysis)
    elif kind == "tv" and grid.ndim == 1:
        metrics["edges"] = edge_metrics(truth, analysis, float(grid.dx))
    return metrics
