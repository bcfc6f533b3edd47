"""mmengine metric classes (registered in splattingocc.registry.METRICS)."""
from .occ_metric import Occ3DMetric, format_occ_table, occ_frame_result, summarize_occ_results

__all__ = ['Occ3DMetric', 'format_occ_table', 'occ_frame_result', 'summarize_occ_results']
