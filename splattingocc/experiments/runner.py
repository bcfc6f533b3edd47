"""The ablation runner behind ``tools/ablate.py``: train every arm under one or two budgets,
calibrate its read-out on val, evaluate on test, collect with intervals.

The protocol (docs/evaluation-protocol.md): train on train, choose every threshold on val, report
on test. For each budget (``--iters N``: equal iterations; ``--budget-minutes M``: equal
training clock; both: two tables from one call), each seed and each arm, in that order (every
arm runs once before the next seed, and the two budgets of a seed run back to back, so drift of
the machine hits all arms alike):

1. ``python tools/train.py BASE --work-dir OUT/<budget>/<arm>/seed<s> --cfg-options <arm>
   randomness.seed=<s> train_cfg.max_iters=<N> ...``; its evaluations during training (the
   learning curve, ``--evals``) run on val, with the threshold sweep for an arm whose read-out
   has a threshold, so each point is the val mIoU at the threshold chosen on val at that point
   (labelled so: it is optimistic), and the argmax read-out's val mIoU otherwise;
2. an arm whose read-out has a threshold: ``tools/test.py CFG CKPT --calibrate`` (sweep on the
   val split, ``<CKPT>.calibration.json``); an argmax read-out has nothing to choose;
3. ``tools/test.py CFG CKPT --eval segm [ray] [ap] [render] [--require-calibration]`` on the
   test split with the val-chosen threshold (``render`` only for arms that render).

An arm whose values cannot be written on a command line (the 3D arms replace the training
pipeline, a list of dicts) is merged into the base with the same ``Config.merge_from_dict`` call
that ``--cfg-options`` uses and written to ``OUT/configs/<arm>.py``, which takes BASE's place.

Continuation: a finished (budget, arm, seed) leaves ``result.json`` in its folder (written
atomically) and is not rerun; a failed one leaves a result with ``status: 'failed'`` and the
error, does not stop the others, and is retried by the next call; an interrupted training resumes
from its last checkpoint. Outputs: ``OUT/results.md``, ``OUT/results.json`` (every run's record:
the split of each metric, the read-out and the curve it was chosen from, iterations, wall-clock),
plots per budget, and, only with a ``log_file``, an entry appended to that experiment log.
"""
from __future__ import annotations

import datetime
import os
import os.path as osp
import shlex
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from splattingocc.engine.checkpoint import atomic_write_text
from splattingocc.engine.watch import tensorboard_available
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT

from .arms import Arm, arm_changes
from .budget import (HOOK_MODULE, TIMER_HOOK_NAME, Budget, iterations_for_minutes,
                     schedule_overrides, seconds_per_iter_from_timing)
from .commands import CommandRunner, RunFailure, run_command, tail
from .overrides import (apply_overrides, check_override_keys, cli_value, describe_overrides,
                        load_base_config, parse_cfg_options)
from .plots import write_plots
from .records import (RESULT_FILE, TIMER_FILE, TIMING_FILE, aggregate_runs, git_commit,
                      is_number, jsonable, last_checkpoint, metric, metrics_files, read_json,
                      write_json)
from .report import append_log_entry, fmt, log_tables, results_markdown
from .stats import paired_difference

#: the final evaluations tools/test.py can run (``--eval``); 'segm' (mIoU) always runs
FINAL_EVALS = ('segm', 'ray', 'ap', 'render')
#: the pairs compared by seed when ``pairs`` is not given (those whose arms are both present):
#: the renderer, 2D against 3D labels, 2D+3D against 3D, learned against fixed Gaussians
HEADLINE_PAIRS = (('splat', 'nerf'), ('splat', '3d'), ('2d3d', '3d'), ('splat', 'seed'))
#: the test metrics compared by seed in every pair
PAIRED_METRICS = ('mIoU', 'RayIoU', 'occupancy_AP')
#: the learning curve's value per evaluation during training: the val mIoU at the threshold the
#: sweep chose at that point (thresholded read-outs), else the val mIoU
CURVE_KEYS = ('sweep_best_mIoU', 'mIoU')
#: the protocol, as results.md and results.json state it
PROTOCOL = ('trained on train; read-out threshold (where the read-out has one) chosen on val by '
            'tools/test.py --calibrate (largest mIoU on its grid); every final number computed '
            'on the split named with it (test unless stated); learning curves on val, each point '
            'at the threshold chosen on val at that point (optimistic, never a headline)')


class AblationRunner:
    """Train, calibrate and test every (budget, arm, seed); collect and report the results.

    Args:
        base: the base config file.
        arms: from :func:`parse_arms`.
        seeds: random seeds; each arm trains once per seed and budget.
        budgets: one :class:`Budget` or several (e.g. equal iterations and equal wall-clock).
        out_dir: output folder (``<budget tag>/<arm>/seed<s>/`` per run, results at the top).
        common_options: ``--cfg-options`` strings applied to every arm (e.g. a data root).
        evals: evaluations on val during each training run (the learning curve); 0: none.
        final_eval: the final evaluations on test (:data:`FINAL_EVALS`; ``segm`` is added,
            ``render`` is skipped for an arm that renders nothing).
        pairs: ``(a, b)`` arm names compared by seed (``a - b``); None: :data:`HEADLINE_PAIRS`
            among the arms given, else the first arm against each other one.
        arm_seeds: ``{arm name: seeds}`` for arms that run other seeds than ``seeds`` (e.g. 5
            seeds for the headline pair, 3 for the rest); pairs use the seeds both ran.
        val_samples: evaluate during training on the first K val samples only (calibration and
            the final test always use the whole split).
        timing_iters: iterations of the timing run of a ``minutes`` budget; the first quarter (at
            least 2) are start-up and not counted.
        command_runner: runs a command (tests inject a fake); ``run_command`` by default.
        python: interpreter for tools/train.py and tools/test.py.
        log_file: experiment log to append an entry to (None, the default: no entry).
        plots: write the PNG plots (matplotlib).
        command_line: the ablate command, for the log entry.
        progress: where progress lines go.
        tensorboard: TensorBoard event files for every training run, in
            ``<run>/tensorboard`` (``tensorboard --logdir OUT`` overlays the arms); None: when
            the tensorboard package is installed. Timing runs write none.
    """

    def __init__(self, base: str, arms: Sequence[Arm], seeds: Sequence[int],
                 budgets: Union[Budget, Sequence[Budget]], out_dir: str,
                 common_options: Sequence[str] = (), evals: int = 4,
                 final_eval: Sequence[str] = FINAL_EVALS,
                 pairs: Optional[Sequence[Tuple[str, str]]] = None,
                 arm_seeds: Optional[Dict[str, Sequence[int]]] = None,
                 val_samples: Optional[int] = None, timing_iters: int = 12,
                 command_runner: Optional[CommandRunner] = None, python: str = sys.executable,
                 log_file: Optional[str] = None, plots: bool = True,
                 command_line: str = '', progress: Callable[[str], None] = None,
                 tensorboard: Optional[bool] = None):
        self.base_path = osp.abspath(base)
        self.base_cfg = load_base_config(self.base_path)
        self.arms = list(arms)
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise UserError('--seeds: give at least one seed')
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f'--seeds: repeated seed in {self.seeds}')
        names = [a.name for a in self.arms]
        self.arm_seeds: Dict[str, List[int]] = {}
        for name, arm_seeds in (arm_seeds or {}).items():
            if name not in names:
                raise UserError(f'--arm-seeds {name}: no such arm among --arms {",".join(names)}')
            arm_seeds = [int(s) for s in arm_seeds]
            if not arm_seeds or len(set(arm_seeds)) != len(arm_seeds):
                raise UserError(f'--arm-seeds {name}: give distinct seeds, got {arm_seeds}')
            self.arm_seeds[name] = arm_seeds
        self.budgets = [budgets] if isinstance(budgets, Budget) else list(budgets)
        if not self.budgets:
            raise UserError('give a budget: --iters N and/or --budget-minutes M')
        tags = [b.tag for b in self.budgets]
        if len(set(tags)) != len(tags):
            raise UserError(f'the same budget given twice: {tags}')
        self.out_dir = osp.abspath(out_dir)
        self.common_parsed, self.common_raw = parse_cfg_options(common_options)
        check_override_keys(self.base_cfg, self.common_parsed, '--cfg-options')
        if evals < 0:
            raise UserError(f'--evals must be >= 0, got {evals}')
        self.evals = int(evals)
        unknown = [e for e in final_eval if e not in FINAL_EVALS]
        if unknown:
            raise UserError(f'--eval: unknown {unknown}; choose from {", ".join(FINAL_EVALS)}')
        self.final_eval = [e for e in FINAL_EVALS if e in set(final_eval) | {'segm'}]
        self.val_samples = val_samples
        if timing_iters < 4:
            raise UserError(f'--timing-iters must be >= 4, got {timing_iters}')
        self.timing_iters = int(timing_iters)
        self.timing_skip = max(2, self.timing_iters // 4)
        self.pairs = self._check_pairs(pairs)
        self.command_runner = command_runner or self._default_runner
        self.python = python
        self.log_file = log_file
        self.plots = bool(plots)
        self._configs: Dict[str, Tuple[str, List[str]]] = {}
        self.command_line = command_line
        self.progress = progress or (lambda msg: print(msg, flush=True))
        self.tensorboard = tensorboard_available() if tensorboard is None else bool(tensorboard)
        self.ran: List[Tuple[str, str, int]] = []
        # what each arm's read-out and supervision are (threshold or argmax; renders or not)
        self.arm_info = {arm.name: self._arm_info(arm) for arm in self.arms}
        # fail early on a schedule that cannot take an iteration budget
        schedule_overrides(self.base_cfg, 1, self.evals)

    # -- plumbing -------------------------------------------------------------------------------
    def _default_runner(self, cmd, log_path, env):
        return run_command(cmd, log_path, env, progress=self.progress)

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
        env['PYTHONPATH'] = os.pathsep.join(dict.fromkeys(paths))
        return env

    def _check_pairs(self, pairs) -> List[Tuple[str, str]]:
        names = [a.name for a in self.arms]
        if pairs is None:
            found = [p for p in HEADLINE_PAIRS if p[0] in names and p[1] in names]
            return found or [(names[0], n) for n in names[1:]]
        out = []
        for a, b in pairs:
            missing = [n for n in (a, b) if n not in names]
            if missing:
                raise UserError(f'--pairs {a}:{b}: no arm {missing[0]!r} among --arms '
                                f'{",".join(names)}')
            if a == b:
                raise UserError(f'--pairs {a}:{b}: an arm compared with itself')
            out.append((a, b))
        return out

    def _arm_info(self, arm: Arm) -> dict:
        """``readout`` ('threshold' or 'argmax') and ``renders`` (a supervision module that
        renders at the labelled pixels, needed by ``--eval render``) of the arm's config."""
        from splattingocc.registry import MODELS
        import splattingocc.supervision  # noqa: F401 - registers the supervision modules
        cfg = apply_overrides(self.base_cfg, arm.overrides)
        if self.common_parsed:
            cfg.merge_from_dict(self.common_parsed)
        model = cfg.get('model') or {}
        threshold = (model.get('readout') or {}).get('threshold')
        renders = False
        for sup in model.get('supervision') or []:
            cls = MODELS.get(sup.get('type')) if isinstance(sup, dict) else None
            renders = renders or (cls is not None and hasattr(cls, 'render_at_labels'))
        sweep = _sweep_tokens(cfg.get('val_evaluator')) if threshold is not None else []
        return dict(readout='argmax' if threshold is None else 'threshold', renders=renders,
                    curve_tokens=sweep)

    def seeds_of(self, arm: Arm) -> List[int]:
        """The seeds ``arm`` runs: its ``arm_seeds`` entry, else ``seeds``."""
        return self.arm_seeds.get(arm.name, self.seeds)

    def all_seeds(self) -> List[int]:
        """Every seed some arm runs, in the order given (``seeds`` first)."""
        return list(dict.fromkeys(self.seeds + [s for a in self.arms for s in self.seeds_of(a)]))

    def run_dir(self, budget: Budget, arm: Arm, seed: int) -> str:
        return osp.join(self.out_dir, budget.tag, arm.name, f'seed{seed}')

    def fingerprint(self, arm: Arm, budget: Budget) -> dict:
        """What a stored result must match to be reused (same base, arm, budget, evaluation)."""
        return dict(base=self.base_path, overrides=jsonable(arm.overrides),
                    common_options=dict(self.common_raw), budget=budget.to_dict(),
                    evals=self.evals, final_eval=self.final_eval, val_samples=self.val_samples,
                    timing_iters=self.timing_iters if budget.minutes is not None else None)

    def config_for(self, arm: Arm) -> Tuple[str, List[str]]:
        """(config file, ``--cfg-options`` tokens of the arm) for train.py and test.py."""
        if arm.name in self._configs:
            return self._configs[arm.name]
        tokens = arm.cli_tokens()
        if tokens is not None:
            out = self.base_path, tokens
        else:
            # some value has no command-line form: merge as --cfg-options would, into a file
            cfg = apply_overrides(self.base_cfg, arm.overrides)
            path = osp.join(self.out_dir, 'configs', f'{arm.name}.py')
            text = (f'# {self.base_path} with the overrides of ablation arm {arm.name!r} '
                    '(written by tools/ablate.py)\n' + cfg.dump())
            atomic_write_text(path, text)
            out = path, []
        self._configs[arm.name] = out
        return out

    def _common_tokens(self) -> List[str]:
        return [f'{k}={v}' for k, v in self.common_raw.items()]

    def _hook_tokens(self, max_seconds: Optional[float], record: bool) -> List[str]:
        imports = list((self.base_cfg.get('custom_imports') or {}).get('imports') or [])
        if isinstance(imports, str):
            imports = [imports]
        if HOOK_MODULE not in imports:
            imports.append(HOOK_MODULE)
        tokens = [f'custom_imports.imports={cli_value(imports)}',
                  'custom_imports.allow_failed_imports=False',
                  f'default_hooks.{TIMER_HOOK_NAME}.type=TimeBudgetHook']
        if max_seconds is not None:
            tokens.append(f'default_hooks.{TIMER_HOOK_NAME}.max_seconds={max_seconds!r}')
        if record:
            tokens.append(f'default_hooks.{TIMER_HOOK_NAME}.record_iter_times=True')
        return tokens

    def train_command(self, arm: Arm, seed: int, work_dir: str, max_iters: int,
                      max_seconds: Optional[float] = None, resume: bool = False,
                      timing: bool = False) -> List[str]:
        config, arm_tokens = self.config_for(arm)
        evals = 0 if timing else self.evals
        budget = {k: cli_value(v) for k, v in
                  schedule_overrides(self.base_cfg, max_iters, evals).items()}
        tokens = arm_tokens + self._common_tokens() + [f'randomness.seed={seed}']
        tokens += [f'{k}={v}' for k, v in budget.items()]
        if timing:
            # no checkpoint files for a timing run
            tokens += ['default_hooks.checkpoint.interval=-1',
                       'default_hooks.checkpoint.save_last=False']
        else:
            if self.val_samples:
                tokens.append(f'val_dataloader.dataset.indices={int(self.val_samples)}')
            if evals:
                # the learning curve at the threshold chosen on val at each point
                tokens += self.arm_info[arm.name]['curve_tokens']
        tokens += self._hook_tokens(max_seconds, record=timing)
        if self.tensorboard and not timing:
            # WORK_DIR/tensorboard: one tree under OUT, a run per (budget, arm, seed)
            tokens += ['default_hooks.watch.type=WatchHook', 'default_hooks.watch.tensorboard=True']
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'train.py'), config, '--work-dir', work_dir]
        if resume:
            cmd.append('--resume')
        return cmd + ['--cfg-options'] + tokens

    def calibrate_command(self, arm: Arm, checkpoint: str, work_dir: str) -> List[str]:
        """tools/test.py --calibrate: the read-out threshold chosen on val."""
        config, arm_tokens = self.config_for(arm)
        tokens = arm_tokens + self._common_tokens()
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'test.py'), config, checkpoint,
               '--calibrate', '--work-dir', work_dir]
        return cmd + (['--cfg-options'] + tokens if tokens else [])

    def test_command(self, arm: Arm, checkpoint: str, work_dir: str) -> List[str]:
        """tools/test.py --eval ...: the final evaluation on test (with the val-chosen threshold;
        refused without one where the read-out has a threshold)."""
        config, arm_tokens = self.config_for(arm)
        info = self.arm_info[arm.name]
        evals = [e for e in self.final_eval if e != 'render' or info['renders']]
        tokens = arm_tokens + self._common_tokens()
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'test.py'), config, checkpoint,
               '--eval', *evals]
        if info['readout'] == 'threshold':
            cmd.append('--require-calibration')
        cmd += ['--work-dir', work_dir]
        return cmd + (['--cfg-options'] + tokens if tokens else [])

    # -- phases ---------------------------------------------------------------------------------
    def check_stored(self) -> None:
        """Refuse to mix results of a different setup in the same output folder."""
        for budget in self.budgets:
            for arm in self.arms:
                want = self.fingerprint(arm, budget)
                for seed in self.seeds_of(arm):
                    run_dir = self.run_dir(budget, arm, seed)
                    stored = read_json(osp.join(run_dir, RESULT_FILE))
                    if stored and stored.get('status') == 'ok' and \
                            stored.get('fingerprint') != want:
                        raise UserError(
                            f'{run_dir} holds a result of a different setup (base, overrides, '
                            'evaluation or options changed); use another --out, or delete that '
                            'folder to rerun it')

    def time_arm(self, arm: Arm, budget: Budget) -> dict:
        """Seconds per iteration of ``arm`` from a short timing run (stored in
        ``<budget>/<arm>/timing.json``) and its iteration budget for ``budget.minutes``."""
        arm_dir = osp.join(self.out_dir, budget.tag, arm.name)
        path = osp.join(arm_dir, TIMING_FILE)
        stored = read_json(path)
        if stored and stored.get('fingerprint') == self.fingerprint(arm, budget):
            return stored
        work_dir = osp.join(arm_dir, 'timing')
        cmd = self.train_command(arm, self.seeds_of(arm)[0], work_dir, self.timing_iters,
                                 timing=True)
        self.progress(f'[{arm.name}] timing run: {self.timing_iters} iterations')
        res = self.command_runner(cmd, osp.join(work_dir, 'train.log'), self._env())
        if res.returncode != 0:
            raise RunFailure('timing', res.returncode, osp.join(work_dir, 'train.log'), cmd)
        timer = read_json(osp.join(work_dir, TIMER_FILE))
        if not timer or len(timer.get('iter_times') or []) <= self.timing_skip:
            raise RunFailure('timing', 0, osp.join(work_dir, 'train.log'), cmd,
                             f'no iteration times in {osp.join(work_dir, TIMER_FILE)}')
        spi = seconds_per_iter_from_timing(timer['iter_times'], self.timing_skip)
        out = dict(fingerprint=self.fingerprint(arm, budget), seconds_per_iter=spi,
                   iters=iterations_for_minutes(budget.minutes, spi),
                   timing_iters=self.timing_iters, skipped=self.timing_skip,
                   command=shlex.join(cmd), seconds=res.seconds)
        write_json(path, out)
        self.progress(f'[{arm.name}] {spi:.3f} s/iteration -> {out["iters"]} iterations in '
                      f'{budget.minutes:g} min')
        return out

    def _run(self, phase: str, cmd: List[str], log_path: str):
        res = self.command_runner(cmd, log_path, self._env())
        if res.returncode != 0:
            raise RunFailure(phase, res.returncode, log_path, cmd)
        return res

    def _new_metrics_doc(self, phase: str, work_dir: str, before: set, cmd, log_path) -> dict:
        new = [p for p in metrics_files(work_dir) if p not in before]
        if not new:
            raise RunFailure(phase, 0, log_path, cmd,
                             f'tools/test.py wrote no {work_dir}/<timestamp>/metrics.json')
        return read_json(max(new, key=osp.getmtime)) or {}

    def run_one(self, budget: Budget, arm: Arm, seed: int) -> dict:
        """Train, calibrate and test one (budget, arm, seed); returns its result (also written to
        result.json)."""
        run_dir = self.run_dir(budget, arm, seed)
        info = self.arm_info[arm.name]
        result = dict(arm=arm.name, seed=seed, fingerprint=self.fingerprint(arm, budget),
                      budget=budget.to_dict(), started=_now())
        if budget.minutes is not None:
            timing = self.time_arm(arm, budget)
            max_iters, max_seconds = int(timing['iters']), budget.minutes * 60.0
            result['timing'] = {k: timing[k] for k in ('seconds_per_iter', 'iters',
                                                       'timing_iters')}
        else:
            max_iters, max_seconds = int(budget.iters), None
        resume = osp.isfile(osp.join(run_dir, 'last_checkpoint'))
        previous = read_json(osp.join(run_dir, RESULT_FILE))
        if previous and previous.get('status') == 'failed' and previous.get('phase') == 'train':
            resume = False  # a failed training starts again from scratch
        cmd = self.train_command(arm, seed, run_dir, max_iters, max_seconds, resume=resume)
        result['train_command'] = shlex.join(cmd)
        result['planned_iters'] = max_iters
        self.progress(f'[{budget.tag} {arm.name} seed {seed}] training {max_iters} iterations'
                      + (' (resuming)' if resume else ''))
        train = self._run('train', cmd, osp.join(run_dir, 'train.log'))
        result['train_wall_seconds'] = train.seconds
        result['peak_rss_mb'] = train.peak_rss_mb
        timer = read_json(osp.join(run_dir, TIMER_FILE))
        if not timer or not timer.get('finished'):
            raise RunFailure('train', 0, osp.join(run_dir, 'train.log'), cmd,
                             f'training ended without {TIMER_FILE}')
        checkpoint = last_checkpoint(run_dir)
        if checkpoint is None:
            raise RunFailure('train', 0, osp.join(run_dir, 'train.log'), cmd,
                             f'no checkpoint in {run_dir} (last_checkpoint missing)')
        iters = int(timer['iters'])
        result.update(iters=iters, train_seconds=float(timer['train_seconds']),
                      seconds_per_iter=float(timer['train_seconds']) / max(1, iters),
                      data_share=_share(timer.get('data_seconds'), timer['train_seconds']),
                      render_share=_share(timer.get('render_seconds'), timer['train_seconds']),
                      stopped_by_budget=bool(timer.get('stopped_by_budget')),
                      peak_gpu_mb=timer.get('peak_gpu_mb'), checkpoint=checkpoint,
                      timeline=_timeline(timer, info['readout']))

        if info['readout'] == 'threshold':
            result['readout'] = self._calibrate_readout(arm, checkpoint, run_dir, seed, budget)
        else:
            result['readout'] = dict(kind='argmax', threshold=None, chosen_on=None,
                                     note='argmax over all classes (free included): no '
                                     'threshold to choose')

        test_dir = osp.join(run_dir, 'test')
        log_path = osp.join(run_dir, 'test.log')
        before = set(metrics_files(test_dir))
        tcmd = self.test_command(arm, checkpoint, test_dir)
        result['test_command'] = shlex.join(tcmd)
        self.progress(f'[{budget.tag} {arm.name} seed {seed}] evaluating '
                      f'{osp.basename(checkpoint)}: {" ".join(tcmd[tcmd.index("--eval") + 1:])}')
        test = self._run('test', tcmd, log_path)
        result['test_wall_seconds'] = test.seconds
        doc = self._new_metrics_doc('test', test_dir, before, tcmd, log_path)
        used = doc.get('readout') or {}
        if info['readout'] == 'threshold' and not used.get('calibrated'):
            raise RunFailure('test', 0, log_path, tcmd,
                             f'the test did not use the calibrated threshold ({used})')
        metrics = doc.get('metrics') or {}
        result['test'] = dict(split=doc.get('split'), ann_file=doc.get('ann_file'),
                              eval=doc.get('eval'), frames=metrics.get('frames'),
                              threshold=used.get('threshold'),
                              threshold_source=used.get('source'))
        result['metrics'] = {k: float(v) for k, v in metrics.items() if is_number(v)}
        chosen_on = result['readout'].get('chosen_on')
        result['labels'] = _labels(result['test']['split'], chosen_on)
        result.update(status='ok', finished=_now())
        return result

    def _calibrate_readout(self, arm: Arm, checkpoint: str, run_dir: str, seed: int,
                           budget: Budget) -> dict:
        """tools/test.py --calibrate on the checkpoint; the chosen threshold and its curve."""
        work_dir = osp.join(run_dir, 'calibrate')
        log_path = osp.join(run_dir, 'calibrate.log')
        before = set(metrics_files(work_dir))
        cmd = self.calibrate_command(arm, checkpoint, work_dir)
        self.progress(f'[{budget.tag} {arm.name} seed {seed}] calibrating the read-out on val')
        self._run('calibrate', cmd, log_path)
        doc = self._new_metrics_doc('calibrate', work_dir, before, cmd, log_path)
        calib = read_json(doc.get('calibration_file') or f'{checkpoint}.calibration.json')
        if not calib or 'threshold' not in calib:
            raise RunFailure('calibrate', 0, log_path, cmd,
                             f'no calibration file {checkpoint}.calibration.json')
        return dict(kind='threshold', threshold=float(calib['threshold']),
                    chosen_on=calib.get('split'), rule=calib.get('rule'),
                    val_mIoU=calib.get('miou'), val_geometry_IoU=calib.get('geometry_iou'),
                    configured_threshold=calib.get('configured_threshold'),
                    configured_val_mIoU=calib.get('configured_miou'),
                    frames=calib.get('frames'), curve=calib.get('curve'),
                    file=doc.get('calibration_file'), command=shlex.join(cmd))

    def run(self) -> dict:
        """Run what is not finished yet, then write the results, plots and the log entry."""
        self.check_stored()
        os.makedirs(self.out_dir, exist_ok=True)
        self.progress(f'TensorBoard: tensorboard --logdir {self.out_dir} (a run per budget, arm '
                      'and seed)' if self.tensorboard else 'TensorBoard: not installed, no '
                      "event files (pip install -e '.[tb]')")
        total = sum(len(self.seeds_of(a)) for a in self.arms) * len(self.budgets)
        done = 0
        # every arm once before the next seed, the budgets of a seed back to back: comparable
        # results early, and drift of the machine spread over all arms
        for seed in self.all_seeds():
            for arm in self.arms:
                if seed not in self.seeds_of(arm):
                    continue
                for budget in self.budgets:
                    done += 1
                    self._run_or_skip(budget, arm, seed, f'[{done}/{total}]')
        summary = self.summarize()
        self.write_outputs(summary)
        if self.log_file and self.ran:
            entry = append_log_entry(self.log_file, summary, log_tables(summary))
            self.progress(f'log entry {entry.id} appended to {self.log_file}')
        elif self.log_file:
            self.progress(f'nothing new ran: {self.log_file} unchanged')
        return summary

    def _run_or_skip(self, budget: Budget, arm: Arm, seed: int, counter: str) -> None:
        path = osp.join(self.run_dir(budget, arm, seed), RESULT_FILE)
        stored = read_json(path)
        name = f'{budget.tag} {arm.name} seed {seed}'
        if stored and stored.get('status') == 'ok':
            self.progress(f'{counter} {name}: finished before, skipped')
            return
        self.progress(f'{counter} {name}')
        try:
            result = self.run_one(budget, arm, seed)
        except RunFailure as err:
            result = dict(arm=arm.name, seed=seed, status='failed', budget=budget.to_dict(),
                          fingerprint=self.fingerprint(arm, budget), phase=err.phase,
                          returncode=err.returncode, error=err.message,
                          log=err.log_path, command=shlex.join(err.cmd),
                          error_tail=tail(err.log_path), finished=_now())
            self.progress(f'[{name}] FAILED in {err.phase}: {err.message}; log: {err.log_path}')
        except (OSError, ValueError, KeyError, TypeError) as err:
            result = dict(arm=arm.name, seed=seed, status='failed', budget=budget.to_dict(),
                          fingerprint=self.fingerprint(arm, budget), phase='runner',
                          returncode=None, error=f'{type(err).__name__}: {err}',
                          error_tail='', finished=_now())
            self.progress(f'[{name}] FAILED: {result["error"]}')
        write_json(path, result)
        self.ran.append((budget.tag, arm.name, seed))
        if result['status'] == 'ok':
            split = result['test']['split']
            self.progress(f'[{name}] {split} mIoU {fmt(metric(result["metrics"], "mIoU"))} '
                          f'after {result["iters"]} iterations '
                          f'({result["seconds_per_iter"]:.3f} s/iter)')

    # -- results --------------------------------------------------------------------------------
    def class_names(self) -> List[str]:
        names = list(self.base_cfg.get('class_names') or [])
        free = self.base_cfg.get('free_label')
        return [n for i, n in enumerate(names) if i != free]

    def summarize(self) -> dict:
        arms = [dict(name=arm.name, description=arm.description,
                     overrides=describe_overrides(arm.overrides), cli=arm.cli_tokens(),
                     **self.arm_info[arm.name], **arm_changes(self.base_cfg, arm))
                for arm in self.arms]
        budgets = []
        for budget in self.budgets:
            rows = []
            for arm in self.arms:
                runs = []
                for seed in self.seeds_of(arm):
                    r = read_json(osp.join(self.run_dir(budget, arm, seed), RESULT_FILE))
                    runs.append(r if r else dict(arm=arm.name, seed=seed, status='missing'))
                rows.append(dict(name=arm.name, runs=runs,
                                 **aggregate_runs(runs, self.class_names())))
            budgets.append(dict(budget.to_dict(), title=budget.title, text=budget.describe(),
                                arms=rows, pairs=self._paired(rows)))
        return dict(date=datetime.date.today().isoformat(), commit=git_commit(),
                    base=osp.relpath(self.base_path) if self.base_path.startswith(os.getcwd())
                    else self.base_path,
                    protocol=PROTOCOL, seeds=self.seeds, arm_seeds=self.arm_seeds,
                    evals=self.evals,
                    final_eval=self.final_eval, common_options=self._common_tokens(),
                    command=self.command_line, out_dir=self.out_dir,
                    class_names=self.class_names(), arms=arms, budgets=budgets)

    def _paired(self, rows: List[dict]) -> List[dict]:
        """The paired differences (by seed) of :attr:`pairs` for every metric of
        :data:`PAIRED_METRICS` that both arms report."""
        by_name = {r['name']: r for r in rows}
        out = []
        for a, b in self.pairs:
            for name in PAIRED_METRICS:
                va, vb = (_by_seed(by_name[x]['runs'], name) for x in (a, b))
                if not va or not vb:
                    continue
                out.append(dict(a=a, b=b, metric=name, **paired_difference(va, vb)))
        return out

    def write_outputs(self, summary: dict) -> None:
        for entry in summary['budgets']:
            folder = osp.join(self.out_dir, entry['tag'])
            if self.plots and any(r.get('status') == 'ok' for a in entry['arms']
                                  for r in a['runs']):
                os.makedirs(folder, exist_ok=True)
                entry['plots'] = [f'{entry["tag"]}/{name}'
                                  for name in write_plots(entry, summary['class_names'], folder)]
            else:  # keep linking plots an earlier call drew
                entry['plots'] = [f'{entry["tag"]}/{n}' for n in sorted(os.listdir(folder))
                                  if n.endswith('.png')] if osp.isdir(folder) else []
        write_json(osp.join(self.out_dir, 'results.json'), summary)
        atomic_write_text(osp.join(self.out_dir, 'results.md'), results_markdown(summary))
        self.progress(f'results: {osp.join(self.out_dir, "results.md")}')


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec='seconds')


def _share(part, whole) -> Optional[float]:
    if part is None or not whole:
        return None
    return float(part) / float(whole)


def _timeline(timer: dict, readout: str) -> List[dict]:
    """The learning curve of a run: per evaluation during training, the val mIoU of
    :data:`CURVE_KEYS` (the first one the evaluation reported) and what it is."""
    out = []
    for t in timer.get('timeline', []):
        metrics = t.get('metrics')
        key = next((k for k in CURVE_KEYS if metric(metrics, k) is not None), None)
        out.append(dict(iter=t['iter'], train_seconds=t['train_seconds'],
                        mIoU=None if key is None else metric(metrics, key), split='val',
                        readout=('threshold chosen on val at this point'
                                 if key == 'sweep_best_mIoU' else
                                 'argmax' if readout == 'argmax' else "the config's threshold")))
    return out


def _sweep_tokens(evaluator) -> List[str]:
    """``--cfg-options`` that add the threshold sweep to every Occ3DMetric of a val evaluator
    given as a metric dict, a list of them or ``dict(type='Evaluator', metrics=[...])``."""
    if isinstance(evaluator, dict) and isinstance(evaluator.get('metrics'), (list, tuple)) \
            and all(isinstance(m, dict) for m in evaluator['metrics']):
        items = [(f'val_evaluator.metrics.{i}.', m) for i, m in enumerate(evaluator['metrics'])]
    elif isinstance(evaluator, (list, tuple)):
        items = [(f'val_evaluator.{i}.', m) for i, m in enumerate(evaluator)]
    elif isinstance(evaluator, dict):
        items = [('val_evaluator.', evaluator)]
    else:
        return []
    tokens = []
    for prefix, m in items:
        if isinstance(m, dict) and m.get('type') == 'Occ3DMetric':
            metrics = [x for x in (m.get('metrics') or ['miou']) if x != 'sweep'] + ['sweep']
            tokens.append(f'{prefix}metrics={cli_value(metrics)}')
    return tokens


def _labels(split: Optional[str], chosen_on: Optional[str]) -> List[str]:
    """Caveats of a run's numbers: not on test, or a threshold chosen on the reported split."""
    labels = []
    if split != 'test':
        labels.append(f'evaluated on the {split} split, not a held-out test split')
    if chosen_on is not None and chosen_on == split:
        labels.append(f'threshold chosen on the {split} split it is reported on: optimistic')
    return labels


def _by_seed(runs: Sequence[dict], name: str) -> Dict[int, float]:
    out = {}
    for r in runs:
        if r.get('status') == 'ok':
            v = metric(r.get('metrics'), name)
            if v is not None:
                out[int(r['seed'])] = v
    return out
