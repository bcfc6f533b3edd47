"""Pure metric math (numpy): Occ3D mIoU, voxel ray casting, SparseOcc RayIoU, the paired
bootstrap of two sets of predictions, the occupancy-threshold sweep, average precision and the
rendering metrics."""
from .average_precision import (average_precision_from_histogram, class_ap_histograms,
                                mean_average_precision, occupancy_ap_histogram, score_histogram)
from .bootstrap import (bootstrap_weights, paired_bootstrap, percentile_interval, rayiou_of_stats,
                        scores_of_hists)
from .occ_miou import (check_prediction_labels, confusion_matrix, confusion_matrix_pair,
                       geometry_iou_from_confusion, miou_from_confusion,
                       occ_scores_from_confusion, per_class_iou)
from .ray_casting import first_hit, first_hits_multi
from .ray_iou import (RAY_IOU_THRESHOLDS, lidar_ray_directions, ray_first_hits,
                      rayiou_frame_stats, rayiou_from_stats)
from .render_metrics import depth_error_sums, depth_metrics_from_sums, pixel_semantic_scores
from .threshold_sweep import (DEFAULT_THRESHOLDS, choose_threshold, occupancy_bins,
                              sweep_confusions, sweep_histogram, sweep_scores, threshold_grid)

__all__ = [
    'check_prediction_labels', 'confusion_matrix', 'confusion_matrix_pair',
    'geometry_iou_from_confusion', 'miou_from_confusion', 'occ_scores_from_confusion',
    'per_class_iou', 'first_hit', 'first_hits_multi', 'RAY_IOU_THRESHOLDS',
    'lidar_ray_directions', 'ray_first_hits', 'rayiou_frame_stats', 'rayiou_from_stats',
    'bootstrap_weights', 'paired_bootstrap', 'percentile_interval', 'rayiou_of_stats',
    'scores_of_hists', 'average_precision_from_histogram', 'class_ap_histograms',
    'mean_average_precision', 'occupancy_ap_histogram', 'score_histogram', 'depth_error_sums',
    'depth_metrics_from_sums', 'pixel_semantic_scores', 'DEFAULT_THRESHOLDS', 'choose_threshold',
    'occupancy_bins', 'sweep_confusions', 'sweep_histogram', 'sweep_scores', 'threshold_grid'
]
