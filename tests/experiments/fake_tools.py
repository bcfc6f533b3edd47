"""A fake tools/train.py + tools/test.py for the ablation runner, and the runner built on it.

The fake writes what the real tools would write (timer file, checkpoint pointer, metrics.json),
so tests of the runner train nothing.
"""
import itertools
import json
import os
from pathlib import Path

from splattingocc.experiments import AblationRunner, Budget, CommandResult, parse_arms
from splattingocc.paths import REPO_ROOT

BASE = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')
VARIANTS = {
    'nerf': REPO_ROOT / 'configs/renderocc/renderocc-tiny-synthetic.py',
    '3d': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-3d.py',
    '2d3d': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-2d3d.py',
    'seed': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-seed.py',
    'sparse': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-sparse.py',
    '3d+render': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-3d-render.py',
}

#: tools/test.py names a folder per call by its start time; the fake numbers them
_RUN_IDS = itertools.count()


def options(cmd):
    """The ``--cfg-options`` of a command as ``{key: value string}``."""
    if '--cfg-options' not in cmd:
        return {}
    tokens = cmd[cmd.index('--cfg-options') + 1:]
    return dict(t.split('=', 1) for t in tokens)


class FakeTools:
    """Writes the files the real tools write.

    train: the timer file, a checkpoint and ``last_checkpoint``; timing runs (``record_iter_times``)
    report iteration times [2, 2, 2, 0.5, 0.5, ...] (s/iter 0.5 after the start-up), training runs
    take ``secs_per_iter`` per iteration and record a learning curve (``sweep_best_mIoU`` when
    the command asks the val evaluator for the sweep, ``mIoU`` otherwise).
    test.py --calibrate: ``<CKPT>.calibration.json`` (threshold ``THRESHOLD[arm] + seed / 100``,
    split val) and a metrics.json naming it. test.py --eval: metrics.json on the test split:
    mIoU = MIOU[arm] + seed (+ ``seed_effect[arm] * seed``), class IoU = mIoU / 2, RayIoU =
    mIoU - 5, occupancy AP = mIoU + 10, and rendering metrics with 'render'; with
    ``--require-calibration`` it refuses (exit 1) when the calibration file is missing, as the real
    tool does.
    """

    MIOU = {'splat': 30.0, 'nerf': 20.0, '3d': 40.0, '2d3d': 45.0, 'uni': 25.0, 'seed': 28.0,
            '3d+render': 42.0}
    THRESHOLD = {'splat': 0.3, 'nerf': 0.2, 'uni': 0.25, 'seed': 0.35}

    def __init__(self, fail=(), secs_per_iter=0.5, seed_effect=None):
        self.calls = []
        self.fail = set(fail)  # (arm, phase) pairs that exit with status 1
        self.secs_per_iter = secs_per_iter
        self.seed_effect = dict(seed_effect or {})

    def phase(self, cmd):
        tool = Path(cmd[1]).stem
        if tool == 'test':
            return 'calibrate' if '--calibrate' in cmd else 'test'
        return tool

    def __call__(self, cmd, log_path, env):
        assert str(REPO_ROOT) in env['PYTHONPATH'].split(os.pathsep)
        tool = self.phase(cmd)
        work_dir = Path(cmd[cmd.index('--work-dir') + 1])
        opts = options(cmd)
        self.calls.append((tool, str(work_dir), cmd))
        arm = work_dir.parent.name if tool == 'train' else work_dir.parent.parent.name
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, 'a') as f:
            f.write(f'fake {tool} of {arm}\n')
            if (arm, tool) in self.fail:
                f.write('Traceback (most recent call last):\nRuntimeError: boom in fake\n')
                return CommandResult(1, 0.1, None)
        if tool == 'train':
            return self._train(arm, work_dir, opts)
        seed = int(work_dir.parent.name[len('seed'):])
        ckpt = cmd[3]
        calib_file = Path(f'{ckpt}.calibration.json')
        run = work_dir / f'20260101_{next(_RUN_IDS):06d}'  # a new folder per call, as the tool
        run.mkdir(parents=True, exist_ok=True)
        if tool == 'calibrate':
            t = self.THRESHOLD[arm] + seed / 100
            calib_file.write_text(json.dumps(dict(
                format='splattingocc-calibration/1', threshold=t, rule='max_miou', miou=33.0,
                geometry_iou=50.0, configured_threshold=0.39, configured_miou=31.0,
                split='val', frames=3, curve=dict(thresholds=[0.1, t, 0.9],
                                                   miou=[10.0, 33.0, 5.0],
                                                   geometry_iou=[40.0, 50.0, 20.0]))))
            (run / 'metrics.json').write_text(json.dumps(dict(
                split='val', eval=['calibrate'], calibration_file=str(calib_file),
                readout=dict(threshold=0.39, source='config (swept)', calibrated=False),
                metrics={'mIoU': 31.0, 'sweep_best_mIoU': 33.0})))
            return CommandResult(0, 0.3, 90.0)
        if '--require-calibration' in cmd and not calib_file.is_file():
            with open(log_path, 'a') as f:
                f.write('UserError: no calibration file\n')
            return CommandResult(1, 0.1, None)
        evals = cmd[cmd.index('--eval') + 1:cmd.index('--work-dir')]
        evals = [e for e in evals if not e.startswith('--')]
        miou = self.MIOU[arm] + seed + self.seed_effect.get(arm, 0.0) * seed
        metrics = {'mIoU': miou, 'geometry_IoU': 50.0, 'car': miou / 2, 'others': 1.0,
                   'frames': 3}
        if 'ray' in evals:
            metrics['RayIoU'] = miou - 5
        if 'ap' in evals:
            metrics.update(occupancy_AP=miou + 10, mAP=miou / 3)
        if 'render' in evals:
            metrics.update(depth_AbsRel=0.1, depth_RMSE=2.0, depth_delta1=90.0,
                           render_accuracy=80.0, render_mIoU=40.0)
        if calib_file.is_file():
            readout = dict(threshold=json.loads(calib_file.read_text())['threshold'],
                           source='calibration', chosen_on='val', calibrated=True)
        else:
            readout = dict(threshold=None, source='the read-out has no threshold',
                           calibrated=False)
        (run / 'metrics.json').write_text(json.dumps(dict(
            split='test', ann_file='nuscenes_infos_test.pkl', eval=evals, readout=readout,
            metrics=metrics)))
        return CommandResult(0, 0.5, 100.0)

    def _train(self, arm, work_dir, opts):
        n = int(opts['train_cfg.max_iters'])
        timer = dict(finished=True, data_seconds=0.1 * n, render_seconds=None,
                     stopped_by_budget=False, peak_gpu_mb=None, timeline=[])
        if opts.get('default_hooks.ablation_timer.record_iter_times') == 'True':
            times = [2.0, 2.0, 2.0] + [0.5] * (n - 3)
            timer.update(iters=n, train_seconds=sum(times), iter_times=times)
        else:
            seed = int(opts['randomness.seed'])
            interval = int(opts.get('train_cfg.val_interval', n))
            key = ('sweep_best_mIoU' if opts.get('val_evaluator.metrics') == '[miou,sweep]'
                   else 'mIoU')
            timer.update(iters=n, train_seconds=n * self.secs_per_iter, iter_times=[],
                         timeline=[dict(iter=i, train_seconds=i * self.secs_per_iter,
                                        metrics={key: self.MIOU[arm] * i / n + seed})
                                   for i in range(interval, n + 1, interval)])
            ckpt = work_dir / f'iter_{n}.pth'
            ckpt.write_bytes(b'weights')
            (work_dir / 'last_checkpoint').write_text(str(ckpt))
        (work_dir / 'ablation_timer.json').write_text(json.dumps(timer))
        return CommandResult(0, 1.0, 321.0)

    def tools(self, tool):
        return [c for c in self.calls if c[0] == tool]


def make_runner(tmp_path, base_cfg, arms='splat,nerf', seeds=(0,), fake=None, **kwargs):
    kwargs.setdefault('budgets', Budget(iters=40))
    kwargs.setdefault('log_file', str(tmp_path / 'log.txt'))
    kwargs.setdefault('plots', False)  # drawing is slow; test_plots_are_written draws
    runner = AblationRunner(BASE, parse_arms([arms], base_cfg), seeds,
                            out_dir=str(tmp_path / 'out'), command_runner=fake or FakeTools(),
                            progress=lambda msg: None, **kwargs)
    return runner
