"""Read the PDE a ConvNet has learned (floor 2): ``analyze_model(model) -> Analysis`` and its report.

:mod:`~pdeconv.analysis.operators` computes the analysis (the definitions and normalisation are stated
there); :mod:`~pdeconv.analysis.load` finds the model to analyse (a run, a checkpoint, a model name);
:mod:`~pdeconv.analysis.report` writes ``analysis.json``, ``summary.md`` and the figures.
"""

from pdeconv.analysis.load import load_model
from pdeconv.analysis.operators import (
    FIELD_SIZE,
    ORDERS,
    SPAN_RTOL,
    Analysis,
    CoefficientFields,
    DepthwiseSpan,
    LayerAnalysis,
    SpatialConv,
    analyze_model,
    first_order_matrices,
    spatial_convs,
    variant_summary,
)
from pdeconv.analysis.report import default_layer, write_report

__all__ = [
    "FIELD_SIZE",
    "ORDERS",
    "SPAN_RTOL",
    "Analysis",
    "CoefficientFields",
    "DepthwiseSpan",
    "LayerAnalysis",
    "SpatialConv",
    "analyze_model",
    "default_layer",
    "first_order_matrices",
    "load_model",
    "spatial_convs",
    "variant_summary",
    "write_report",
]
