"""Comparing finished (and running) runs: which runs may stand side by side, their metrics, learning curves, paired
bootstrap differences and per-bucket breakdowns. Plain functions over run.json contents and per-user test results,
so everything here is tested without Streamlit; `app_pages/compare.py` only arranges widgets, and recsys.charts draws.

One module per concern (the package re-exports the public names, so ``from recsys import compare as C`` is all a
caller needs):

* discovery   run folders under a root, read through recsys.runs' RunDirectory (no second parser or sha256 check)
* grouping    the comparability rule: which runs' numbers may share a table, and why two groups differ
* describe    labels, dataset / protocol summaries, captions and the metrics table
* curves      learning curves and the best epoch from history.jsonl
* paired      row alignment of two runs and the paired bootstrap (recsys.evaluation.metrics.paired_bootstrap)
* breakdowns  a metric per bucket of user activity or of the time gap before the held-out interaction
* seeds       runs that differ only in seed as one configuration: mean +- sd, per-user means, the model x dataset
              matrix and paired comparisons against a reference configuration
"""
from recsys.compare.breakdowns import (
    ACTIVITY_LABELS,
    GAP_LABELS,
    activity_buckets,
    breakdown,
    bucket_interval,
    gap_buckets,
    pooled_breakdown_frames,
)
from recsys.compare.curves import (
    best_epoch,
    history_frame,
    learning_curves,
    monitored_metric,
    seed_band,
    valid_metric_names,
)
from recsys.compare.describe import (
    FLOOR_MODELS,
    MODEL_NAMES,
    available_ks,
    dataset_summary,
    default_selection,
    filters_summary,
    format_p,
    format_table,
    group_caption,
    group_title,
    history_length,
    is_embedded_ml100k,
    is_floor,
    max_len_note,
    metric_columns,
    metric_display,
    metrics_table,
    model_label,
    protocol_summary,
    run_metrics,
    run_names,
)
from recsys.compare.discovery import (
    FAMILIES,
    Run,
    RunError,
    ScanResult,
    distinct,
    folder_stamp,
    info_stamp,
    load_test_results,
    read_history,
    results_stamp,
    run_users,
    scan_runs,
    validate_info,
)
from recsys.compare.grouping import (
    ComparabilityKey,
    Group,
    comparability_key,
    default_group,
    explain_differences,
    families,
    group_runs,
    has_rating_head,
    key_differences,
)
from recsys.compare.paired import (
    ComparisonError,
    align_pair,
    compare_pair,
    comparison_metrics,
    comparison_sentence,
    default_pair,
    preferred_order,
)
from recsys.compare.seeds import (
    DEFAULT_INTERVAL,
    DETERMINISTIC,
    INTERVALS,
    SeedAlignmentError,
    SeedGroup,
    compare_configurations,
    compare_groups,
    configuration_key,
    configuration_labels,
    default_configuration_pair,
    floor_flags,
    format_mean_sd,
    format_seed_table,
    interval_floor_flags,
    mean_sd,
    per_user_differences,
    per_user_mean,
    ranking_matrix,
    reference_comparisons,
    seed_groups,
    seed_of,
    seed_table,
    variant_of,
    win_tie_loss,
)

__all__ = [
    # discovery
    "FAMILIES", "Run", "ScanResult", "RunError", "distinct", "folder_stamp", "scan_runs", "validate_info",
    "load_test_results",
    "results_stamp", "info_stamp", "read_history", "run_users",
    # grouping
    "ComparabilityKey", "Group", "families", "has_rating_head", "comparability_key", "group_runs", "default_group",
    "key_differences", "explain_differences",
    # describe
    "FLOOR_MODELS", "MODEL_NAMES", "is_floor", "is_embedded_ml100k", "default_selection", "model_label",
    "run_names", "dataset_summary", "filters_summary", "protocol_summary", "group_title", "group_caption",
    "max_len_note", "history_length", "available_ks", "metric_columns", "run_metrics", "metrics_table",
    "format_table", "format_p", "metric_display",
    # curves
    "history_frame", "valid_metric_names", "monitored_metric", "best_epoch", "learning_curves", "seed_band",
    # paired
    "ComparisonError", "align_pair", "compare_pair", "comparison_sentence", "comparison_metrics",
    "default_pair", "preferred_order",
    # seeds
    "DEFAULT_INTERVAL", "INTERVALS", "compare_configurations", "default_configuration_pair", "per_user_differences",
    "interval_floor_flags",
    "win_tie_loss",
    "DETERMINISTIC", "SeedAlignmentError", "SeedGroup", "compare_groups", "configuration_key", "configuration_labels",
    "floor_flags", "format_mean_sd",
    "format_seed_table", "mean_sd", "per_user_mean", "ranking_matrix", "reference_comparisons", "seed_groups",
    "seed_of", "seed_table", "variant_of",
    # breakdowns
    "ACTIVITY_LABELS", "GAP_LABELS", "activity_buckets", "gap_buckets", "breakdown", "bucket_interval",
    "pooled_breakdown_frames",
]
