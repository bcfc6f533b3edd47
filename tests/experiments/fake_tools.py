"""A fake tools/train.py + tools/test.py for the ablation runner, and the runner built on it.

The fake writes what the real tools would write (timer file, checkpoint pointer, metrics.json),
so tests of the runner train nothing.
"""
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
    '3d+render': REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic-3d-render.py',
}


def options(cmd):
    """The ``--cfg-options`` of a command as ``{key: value string}``."""
    if '--cfg-options' not in cmd:
        return {}
    tokens = cmd[cmd.index('--cfg-options') + 1:]
    return dict(t.split('=', 1) for t in tokens)


class FakeTools:
    """Writes the files the real tools write. mIoU = MIOU[arm] + seed; class IoU = mIoU / 2.

    Calibration runs report iteration times [2, 2, 2, 0.5, 0.5, ...] (s/iter 0.5 after the
    start-up); training runs take ``secs_per_iter`` per iteration.
    """

    MIOU = {'splat': 30.0, 'nerf': 20.0, '3d': 40.0, '2d3d': 45.0, 'uni': 25.0,
            '3d+render': 42.0}

    def __init__(self, fail=(), secs_per_iter=0.5):
        self.calls = []
        self.fail = set(fail)  # (arm, phase) pairs that exit with status 1
        self.secs_per_iter = secs_per_iter

    def __call__(self, cmd, log_path, env):
        assert str(REPO_ROOT) in env['PYTHONPATH'].split(os.pathsep)
        tool = Path(cmd[1]).stem
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
            n = int(opts['train_cfg.max_iters'])
            timer = dict(finished=True, data_seconds=0.1 * n, render_seconds=None,
                         stopped_by_budget=False, peak_gpu_mb=None, timeline=[])
            if opts.get('default_hooks.ablation_timer.record_iter_times') == 'True':
                times = [2.0, 2.0, 2.0] + [0.5] * (n - 3)
                timer.update(iters=n, train_seconds=sum(times), iter_times=times)
            else:
                seed = int(opts['randomness.seed'])
                interval = int(opts.get('train_cfg.val_interval', n))
                timer.update(iters=n, train_seconds=n * self.secs_per_iter, iter_times=[],
                             timeline=[dict(iter=i, train_seconds=i * self.secs_per_iter,
                                            metrics=dict(mIoU=self.MIOU[arm] * i / n + seed))
                                       for i in range(interval, n + 1, interval)])
                ckpt = work_dir / f'iter_{n}.pth'
                ckpt.write_bytes(b'weights')
                (work_dir / 'last_checkpoint').write_text(str(ckpt))
            (work_dir / 'ablation_timer.json').write_text(json.dumps(timer))
            return CommandResult(0, 1.0, 321.0)
        seed = int(work_dir.parent.name[len('seed'):])
        miou = self.MIOU[arm] + seed
        run = work_dir / f'2026010{len(self.calls) % 10}_000000'
        run.mkdir(parents=True, exist_ok=True)
        metrics = {'mIoU': miou, 'geometry_IoU': 50.0, 'car': miou / 2, 'others': 1.0,
                   'frames': 3}
        (run / 'metrics.json').write_text(json.dumps(dict(metrics=metrics)))
        return CommandResult(0, 0.5, 100.0)

    def tools(self, tool):
        return [c for c in self.calls if c[0] == tool]


def make_runner(tmp_path, base_cfg, arms='splat,nerf', seeds=(0,), fake=None, **kwargs):
    kwargs.setdefault('budget', Budget(iters=40))
    kwargs.setdefault('log_file', str(tmp_path / 'log.txt'))
    kwargs.setdefault('plots', False)  # drawing is slow; test_plots_are_written draws
    runner = AblationRunner(BASE, parse_arms([arms], base_cfg), seeds,
                            out_dir=str(tmp_path / 'out'), command_runner=fake or FakeTools(),
                            progress=lambda msg: None, **kwargs)
    return runner
