"""The ablation runner behind ``tools/ablate.py``: train every arm under one budget, evaluate,
collect.

Each (arm, seed) runs as ``python tools/train.py BASE --work-dir OUT/<arm>/seed<s> --cfg-options
<arm> randomness.seed=<s> train_cfg.max_iters=<N> ...`` and then ``python tools/test.py ...
--eval segm [ray]``. An arm whose values cannot be written on a command line (the 3D arms replace
the training pipeline, a list of dicts) is merged into the base with the same
``Config.merge_from_dict`` call that ``--cfg-options`` uses and written to ``OUT/<arm>/config.py``,
which then takes the place of BASE.

Continuation: a finished (arm, seed) leaves ``OUT/<arm>/seed<s>/result.json`` (written
atomically) and is not rerun; a failed one leaves a result with ``status: 'failed'`` and the
error, does not stop the others, and is retried by the next call; an interrupted training resumes
from its last checkpoint. Outputs: ``OUT/results.md``, ``OUT/results.json``, plots, and, only
with a ``log_file``, an entry appended to that experiment log.
"""
from __future__ import annotations

import datetime
import os
import os.path as osp
import shlex
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from splattingocc.engine.checkpoint import atomic_write_text
from splattingocc.engine.watch import tensorboard_available
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT

from .arms import Arm, arm_changes
from .budget import (HOOK_MODULE, TIMER_HOOK_NAME, Budget, iterations_for_minutes,
                     schedule_overrides, seconds_per_iter_from_calibration)
from .commands import CommandRunner, RunFailure, run_command, tail
from .overrides import (apply_overrides, check_override_keys, cli_value, describe_overrides,
                        load_base_config, parse_cfg_options)
from .plots import PLOT_FILES, write_plots
from .records import (CALIBRATION_FILE, RESULT_FILE, TIMER_FILE, aggregate_runs, git_commit,
                      is_number, jsonable, last_checkpoint, metric, metrics_files, read_json,
                      write_json)
from .report import append_log_entry, fmt, results_markdown, results_table


class AblationRunner:
    """Train and evaluate every (arm, seed) under one budget; collect and report the results.

    Args:
        base: the base config file.
        arms: from :func:`parse_arms`.
        seeds: random seeds; each arm trains once per seed.
        budget: :class:`Budget`.
        out_dir: output folder (``<arm>/seed<s>/`` per run, results files at the top).
        common_options: ``--cfg-options`` strings applied to every arm (e.g. a data root).
        evals: evaluations during each training run (mIoU against training time); 0: none.
        ray: also RayIoU in the final evaluation (``--eval segm ray``).
        val_samples: evaluate during training on the first K val samples only (the final test
            always uses the whole split).
        calib_iters: iterations of a calibration run (``--budget-minutes``); the first quarter
            (at least 2) are start-up and not counted.
        command_runner: runs a command (tests inject a fake); ``run_command`` by default.
        python: interpreter for tools/train.py and tools/test.py.
        log_file: experiment log to append an entry to (None, the default: no entry).
        plots: write the PNG plots (matplotlib).
        command_line: the ablate command, for the log entry.
        progress: where progress lines go.
        tensorboard: TensorBoard event files for every training run, in
            ``OUT/<arm>/seed<s>/tensorboard`` (``tensorboard --logdir OUT`` overlays the arms);
            None: when the tensorboard package is installed. Calibration runs write none.
    """

    def __init__(self, base: str, arms: Sequence[Arm], seeds: Sequence[int], budget: Budget,
                 out_dir: str, common_options: Sequence[str] = (), evals: int = 4,
                 ray: bool = False, val_samples: Optional[int] = None, calib_iters: int = 12,
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
        self.budget = budget
        self.out_dir = osp.abspath(out_dir)
        self.common_parsed, self.common_raw = parse_cfg_options(common_options)
        check_override_keys(self.base_cfg, self.common_parsed, '--cfg-options')
        if evals < 0:
            raise UserError(f'--evals must be >= 0, got {evals}')
        self.evals = int(evals)
        self.ray = bool(ray)
        self.val_samples = val_samples
        if calib_iters < 4:
            raise UserError(f'--calib-iters must be >= 4, got {calib_iters}')
        self.calib_iters = int(calib_iters)
        self.calib_skip = max(2, self.calib_iters // 4)
        self.command_runner = command_runner or self._default_runner
        self.python = python
        self.log_file = log_file
        self.plots = bool(plots)
        self._configs: Dict[str, Tuple[str, List[str]]] = {}
        self.command_line = command_line
        self.progress = progress or (lambda msg: print(msg, flush=True))
        self.tensorboard = tensorboard_available() if tensorboard is None else bool(tensorboard)
        self.ran: List[Tuple[str, int]] = []
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

    def arm_dir(self, arm: Arm) -> str:
        return osp.join(self.out_dir, arm.name)

    def run_dir(self, arm: Arm, seed: int) -> str:
        return osp.join(self.out_dir, arm.name, f'seed{seed}')

    def fingerprint(self, arm: Arm) -> dict:
        """What a stored result must match to be reused (same base, arm, budget, evaluation)."""
        return dict(base=self.base_path, overrides=jsonable(arm.overrides),
                    common_options=dict(self.common_raw), budget=self.budget.to_dict(),
                    evals=self.evals, ray=self.ray, val_samples=self.val_samples,
                    calib_iters=self.calib_iters if self.budget.minutes is not None else None)

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
            path = osp.join(self.arm_dir(arm), 'config.py')
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
                      calibration: bool = False) -> List[str]:
        config, arm_tokens = self.config_for(arm)
        budget = {k: cli_value(v) for k, v in
                  schedule_overrides(self.base_cfg, max_iters, 0 if calibration else
                                     self.evals).items()}
        tokens = arm_tokens + self._common_tokens() + [f'randomness.seed={seed}']
        tokens += [f'{k}={v}' for k, v in budget.items()]
        if calibration:
            # no checkpoint files for a timing run
            tokens += ['default_hooks.checkpoint.interval=-1',
                       'default_hooks.checkpoint.save_last=False']
        elif self.val_samples:
            tokens.append(f'val_dataloader.dataset.indices={int(self.val_samples)}')
        tokens += self._hook_tokens(max_seconds, record=calibration)
        if self.tensorboard and not calibration:
            # WORK_DIR/tensorboard: one tree under OUT, a run per (arm, seed)
            tokens += ['default_hooks.watch.type=WatchHook', 'default_hooks.watch.tensorboard=True']
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'train.py'), config, '--work-dir', work_dir]
        if resume:
            cmd.append('--resume')
        return cmd + ['--cfg-options'] + tokens

    def test_command(self, arm: Arm, checkpoint: str, work_dir: str) -> List[str]:
        config, arm_tokens = self.config_for(arm)
        tokens = arm_tokens + self._common_tokens()
        cmd = [self.python, str(REPO_ROOT / 'tools' / 'test.py'), config, checkpoint,
               '--eval', 'segm'] + (['ray'] if self.ray else []) + ['--work-dir', work_dir]
        return cmd + (['--cfg-options'] + tokens if tokens else [])

    # -- phases ---------------------------------------------------------------------------------
    def check_stored(self) -> None:
        """Refuse to mix results of a different setup in the same output folder."""
        for arm in self.arms:
            want = self.fingerprint(arm)
            for seed in self.seeds:
                stored = read_json(osp.join(self.run_dir(arm, seed), RESULT_FILE))
                if stored and stored.get('status') == 'ok' and stored.get('fingerprint') != want:
                    raise UserError(
                        f'{self.run_dir(arm, seed)} holds a result of a different setup (base, '
                        'overrides, budget or evaluation changed); use another --out, or delete '
                        'that folder to rerun it')

    def calibrate(self, arm: Arm) -> dict:
        """Seconds per iteration of ``arm`` (stored in ``<arm>/calibration.json``) and its
        iteration budget."""
        path = osp.join(self.arm_dir(arm), CALIBRATION_FILE)
        stored = read_json(path)
        if stored and stored.get('fingerprint') == self.fingerprint(arm):
            return stored
        work_dir = osp.join(self.arm_dir(arm), 'calibration')
        cmd = self.train_command(arm, self.seeds[0], work_dir, self.calib_iters, calibration=True)
        self.progress(f'[{arm.name}] calibration: {self.calib_iters} iterations')
        res = self.command_runner(cmd, osp.join(work_dir, 'train.log'), self._env())
        if res.returncode != 0:
            raise RunFailure('calibration', res.returncode, osp.join(work_dir, 'train.log'), cmd)
        timer = read_json(osp.join(work_dir, TIMER_FILE))
        if not timer or len(timer.get('iter_times') or []) <= self.calib_skip:
            raise RunFailure('calibration', 0, osp.join(work_dir, 'train.log'), cmd,
                             f'no iteration times in {osp.join(work_dir, TIMER_FILE)}')
        spi = seconds_per_iter_from_calibration(timer['iter_times'], self.calib_skip)
        out = dict(fingerprint=self.fingerprint(arm), seconds_per_iter=spi,
                   iters=iterations_for_minutes(self.budget.minutes, spi),
                   calib_iters=self.calib_iters, skipped=self.calib_skip,
                   command=shlex.join(cmd), seconds=res.seconds)
        write_json(path, out)
        self.progress(f'[{arm.name}] calibration: {spi:.3f} s/iteration -> {out["iters"]} '
                      f'iterations in {self.budget.minutes:g} min')
        return out

    def run_one(self, arm: Arm, seed: int) -> dict:
        """Train and test one (arm, seed); returns its result (also written to result.json)."""
        run_dir = self.run_dir(arm, seed)
        result = dict(arm=arm.name, seed=seed, fingerprint=self.fingerprint(arm),
                      budget=self.budget.to_dict(), started=_now())
        calibration = None
        if self.budget.minutes is not None:
            calibration = self.calibrate(arm)
            max_iters, max_seconds = int(calibration['iters']), self.budget.minutes * 60.0
            result['calibration'] = {k: calibration[k] for k in
                                     ('seconds_per_iter', 'iters', 'calib_iters')}
        else:
            max_iters, max_seconds = int(self.budget.iters), None
        resume = osp.isfile(osp.join(run_dir, 'last_checkpoint'))
        previous = read_json(osp.join(run_dir, RESULT_FILE))
        if previous and previous.get('status') == 'failed':
            resume = False  # a failed run starts again from scratch
        cmd = self.train_command(arm, seed, run_dir, max_iters, max_seconds, resume=resume)
        result['train_command'] = shlex.join(cmd)
        result['planned_iters'] = max_iters
        self.progress(f'[{arm.name} seed {seed}] training {max_iters} iterations'
                      + (' (resuming)' if resume else ''))
        train = self.command_runner(cmd, osp.join(run_dir, 'train.log'), self._env())
        result['train_wall_seconds'] = train.seconds
        result['peak_rss_mb'] = train.peak_rss_mb
        if train.returncode != 0:
            raise RunFailure('train', train.returncode, osp.join(run_dir, 'train.log'), cmd)
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
                      timeline=[dict(iter=t['iter'], train_seconds=t['train_seconds'],
                                     mIoU=metric(t.get('metrics'), 'mIoU'))
                                for t in timer.get('timeline', [])])

        test_dir = osp.join(run_dir, 'test')
        before = set(metrics_files(test_dir))
        tcmd = self.test_command(arm, checkpoint, test_dir)
        result['test_command'] = shlex.join(tcmd)
        self.progress(f'[{arm.name} seed {seed}] evaluating {osp.basename(checkpoint)}')
        test = self.command_runner(tcmd, osp.join(run_dir, 'test.log'), self._env())
        result['test_wall_seconds'] = test.seconds
        if test.returncode != 0:
            raise RunFailure('test', test.returncode, osp.join(run_dir, 'test.log'), tcmd)
        new = [p for p in metrics_files(test_dir) if p not in before]
        if not new:
            raise RunFailure('test', 0, osp.join(run_dir, 'test.log'), tcmd,
                             f'tools/test.py wrote no {test_dir}/<timestamp>/metrics.json')
        metrics = (read_json(max(new, key=osp.getmtime)) or {}).get('metrics') or {}
        result['metrics'] = {k: float(v) for k, v in metrics.items() if is_number(v)}
        result.update(status='ok', finished=_now())
        return result

    def run(self) -> dict:
        """Run what is not finished yet, then write the results, plots and the log entry."""
        self.check_stored()
        os.makedirs(self.out_dir, exist_ok=True)
        self.progress(f'TensorBoard: tensorboard --logdir {self.out_dir} (a run per arm and seed)'
                      if self.tensorboard else 'TensorBoard: not installed, no event files '
                      "(pip install -e '.[tb]')")
        total = len(self.arms) * len(self.seeds)
        done = 0
        for seed in self.seeds:  # every arm once before the next seed: comparable results early
            for arm in self.arms:
                done += 1
                path = osp.join(self.run_dir(arm, seed), RESULT_FILE)
                stored = read_json(path)
                if stored and stored.get('status') == 'ok':
                    self.progress(f'[{done}/{total}] {arm.name} seed {seed}: finished before, '
                                  'skipped')
                    continue
                self.progress(f'[{done}/{total}] {arm.name} seed {seed}')
                try:
                    result = self.run_one(arm, seed)
                except RunFailure as err:
                    result = dict(arm=arm.name, seed=seed, status='failed',
                                  fingerprint=self.fingerprint(arm), phase=err.phase,
                                  returncode=err.returncode, error=err.message,
                                  log=err.log_path, command=shlex.join(err.cmd),
                                  error_tail=tail(err.log_path), finished=_now())
                    self.progress(f'[{arm.name} seed {seed}] FAILED in {err.phase}: '
                                  f'{err.message}; log: {err.log_path}')
                except (OSError, ValueError, KeyError, TypeError) as err:
                    result = dict(arm=arm.name, seed=seed, status='failed',
                                  fingerprint=self.fingerprint(arm), phase='runner',
                                  returncode=None, error=f'{type(err).__name__}: {err}',
                                  error_tail='', finished=_now())
                    self.progress(f'[{arm.name} seed {seed}] FAILED: {result["error"]}')
                write_json(path, result)
                self.ran.append((arm.name, seed))
                if result['status'] == 'ok':
                    self.progress(f'[{arm.name} seed {seed}] mIoU '
                                  f'{fmt(metric(result["metrics"], "mIoU"))} after '
                                  f'{result["iters"]} iterations '
                                  f'({result["seconds_per_iter"]:.3f} s/iter)')
        summary = self.summarize()
        self.write_outputs(summary)
        if self.log_file and self.ran:
            entry = append_log_entry(self.log_file, summary, results_table(summary))
            self.progress(f'log entry {entry.id} appended to {self.log_file}')
        elif self.log_file:
            self.progress(f'nothing new ran: {self.log_file} unchanged')
        return summary

    # -- results --------------------------------------------------------------------------------
    def class_names(self) -> List[str]:
        names = list(self.base_cfg.get('class_names') or [])
        free = self.base_cfg.get('free_label')
        return [n for i, n in enumerate(names) if i != free]

    def summarize(self) -> dict:
        arms = []
        for arm in self.arms:
            runs = []
            for seed in self.seeds:
                r = read_json(osp.join(self.run_dir(arm, seed), RESULT_FILE))
                runs.append(r if r else dict(arm=arm.name, seed=seed, status='missing'))
            arms.append(dict(name=arm.name, description=arm.description,
                             overrides=describe_overrides(arm.overrides),
                             cli=arm.cli_tokens(), **arm_changes(self.base_cfg, arm),
                             runs=runs, **aggregate_runs(runs, self.class_names())))
        return dict(date=datetime.date.today().isoformat(), commit=git_commit(),
                    base=osp.relpath(self.base_path) if self.base_path.startswith(os.getcwd())
                    else self.base_path,
                    budget=self.budget.to_dict(), budget_text=self.budget.describe(),
                    seeds=self.seeds, evals=self.evals, ray=self.ray,
                    common_options=self._common_tokens(), command=self.command_line,
                    out_dir=self.out_dir, class_names=self.class_names(), arms=arms)

    def write_outputs(self, summary: dict) -> None:
        if self.plots:
            summary['plots'] = write_plots(summary, self.out_dir)
        else:  # keep linking plots an earlier call drew
            summary['plots'] = [n for n in PLOT_FILES if osp.isfile(osp.join(self.out_dir, n))]
        write_json(osp.join(self.out_dir, 'results.json'), summary)
        atomic_write_text(osp.join(self.out_dir, 'results.md'), results_markdown(summary))
        self.progress(f'results: {osp.join(self.out_dir, "results.md")}')


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec='seconds')


def _share(part, whole) -> Optional[float]:
    if part is None or not whole:
        return None
    return float(part) / float(whole)
