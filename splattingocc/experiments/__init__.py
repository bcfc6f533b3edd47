"""Ablation experiments (``tools/ablate.py``): every arm trained under the same budget(s), its
read-out calibrated on val, evaluated on test, compared over seeds with 95 % intervals.

An *arm* is the base config with one thing changed, written as ``--cfg-options`` keys -> values
(the override mechanism of ``tools/train.py``). Modules, each importing only those above it:

* :mod:`.overrides`: load a base config, merge / format / parse / diff / check overrides;
* :mod:`.stats`: the 95 % t-interval over seeds and paired differences by seed;
* :mod:`.records`: the files a run leaves (``result.json``, the timer file, checkpoints,
  ``metrics.json``), the means and intervals over seeds, the git commit;
* :mod:`.commands`: running tools/train.py and tools/test.py as subprocesses;
* :mod:`.arms`: :class:`Arm`, the named arms (``splat``, ``nerf``, ``seed``, ``3d``, ``2d3d``),
  ``--arms``;
* :mod:`.budget`: :class:`Budget` (``--iters`` / ``--budget-minutes``), the schedule that fits
  it, and :class:`TimeBudgetHook`, which the training subprocesses import from there;
* :mod:`.report`: the tables per budget (with paired differences), ``results.md`` and the
  experiment-log entry (IDs ``E<n>``);
* :mod:`.plots`: the PNG plots;
* :mod:`.runner`: :class:`AblationRunner` (commands, timing runs, the calibrate-on-val /
  test-on-test protocol, continuation, outputs);
* :mod:`.cli`: the command line of ``tools/ablate.py``.
"""
from .arms import NAMED_ARMS, Arm, arm_changes, named_arm, parse_arms
from .budget import (HOOK_MODULE, Budget, TimeBudgetHook, iterations_for_minutes,
                     schedule_overrides, seconds_per_iter_from_timing)
from .cli import build_parser, main
from .commands import CommandResult, RunFailure, run_command
from .overrides import (apply_overrides, check_override_keys, cli_tokens, cli_value,
                        config_diff, describe_overrides, flatten_config, load_base_config,
                        parse_cfg_options, parse_cli_value, split_top_level)
from .plots import write_plots
from .records import aggregate_runs, git_commit
from .report import (LogEntry, append_log_entry, interval_text, next_entry_id, pairs_table,
                     results_markdown, results_table)
from .runner import FINAL_EVALS, HEADLINE_PAIRS, AblationRunner
from .stats import paired_difference, t_interval, t_quantile

__all__ = [
    'TimeBudgetHook', 'HOOK_MODULE', 'Arm', 'NAMED_ARMS', 'arm_changes', 'load_base_config',
    'describe_overrides', 'split_top_level', 'parse_cfg_options', 'Budget', 'AblationRunner',
    'CommandResult', 'RunFailure', 'named_arm', 'parse_arms', 'apply_overrides',
    'flatten_config', 'config_diff', 'check_override_keys', 'cli_value', 'cli_tokens',
    'parse_cli_value', 'schedule_overrides', 'iterations_for_minutes',
    'seconds_per_iter_from_timing', 'aggregate_runs', 'results_table', 'results_markdown',
    'LogEntry', 'append_log_entry', 'next_entry_id', 'write_plots', 'run_command', 'git_commit',
    'main', 'build_parser', 'FINAL_EVALS', 'HEADLINE_PAIRS', 'paired_difference', 't_interval',
    't_quantile', 'interval_text', 'pairs_table'
]
