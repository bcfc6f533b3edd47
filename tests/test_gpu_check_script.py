"""tools/gpu_check.sh, the GPU acceptance script (issue 25): it parses, documents and lists each
step, refuses a machine without CUDA with one line, and the config overrides of its training
steps name keys the tiny config has. It cannot run here (no GPU): this is what a CPU can check."""
import re
import shutil
import subprocess

import pytest
import torch

from splattingocc.engine.launch import load_config
from splattingocc.paths import REPO_ROOT

SCRIPT = REPO_ROOT / 'tools' / 'gpu_check.sh'
STEPS = ['cuda', 'build', 'gpu-tests', 'train-fp32', 'train-amp', 'benchmark']


def test_script_parses_and_lists_its_steps():
    assert subprocess.run(['bash', '-n', str(SCRIPT)]).returncode == 0
    proc = subprocess.run(['bash', str(SCRIPT), '--list'], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.split() == STEPS


@pytest.mark.skipif(shutil.which('shellcheck') is None, reason='shellcheck is not installed')
def test_shellcheck_is_clean():
    proc = subprocess.run(['shellcheck', '-x', str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_each_step_is_documented_and_run():
    text = SCRIPT.read_text()
    header = text[:text.index('set -uo pipefail')]
    for i, step in enumerate(STEPS, 1):
        assert re.search(rf'^#\s+{i}\. {re.escape(step)}\s', header, re.M), step
    # what the steps run
    for command in ('python -m splattingocc.rendering.gsplat_build', 'pytest -m gpu',
                    'tools/train.py', '--amp', 'benchmark_render.py', 'summary table'):
        assert command in header, command
    body = text[len(header):]
    assert '-m splattingocc.rendering.gsplat_build' in body
    assert '-m pytest -m gpu' in body
    assert body.count('tools/train.py') == 1 and "extra=(--amp)" in body
    assert '--backends torch,gsplat,gsplat-pad32' in body and '--device cuda' in body
    assert 'train_cfg.max_iters=20' in body and 'model.supervision.0.renderer.type=GsplatRenderer' \
        in body
    assert 'print_summary' in body


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal without CUDA')
def test_without_cuda_it_refuses_with_one_line(tmp_path):
    proc = subprocess.run(['bash', str(SCRIPT)], capture_output=True, text=True, timeout=300,
                          cwd=str(REPO_ROOT), env={'PATH': '/usr/bin:/bin', 'OUT': str(tmp_path),
                                                   'PYTHON': _python()})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'sees no CUDA device' in lines[0] and 'CUDA GPU' in lines[0]


def _python():
    import sys
    return sys.executable


def test_training_overrides_name_keys_of_the_tiny_config():
    text = SCRIPT.read_text()
    cfg = load_config(str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py'))
    assert cfg.train_dataloader.dataset.pipeline[2].type == 'ResizeCropImages'
    assert cfg.val_dataloader.dataset.pipeline[1].type == 'ResizeCropImages'
    assert cfg.model.supervision[0].type == 'RaySupervision'
    assert 'renderer' in cfg.model.supervision[0] and 'pixel_sampler' in cfg.model.supervision[0]
    assert cfg.param_scheduler[1].end == cfg.train_cfg.max_iters
    for key in re.findall(r'\b((?:model|train_dataloader|val_dataloader|val_evaluator|train_cfg|'
                          r'param_scheduler|default_hooks|log_processor)\.[\w.]+)=', text):
        if key == 'train_cfg.val_begin':  # an argument of the loop, not in the config
            import inspect
            from mmengine.runner import IterBasedTrainLoop
            assert cfg.train_cfg.type == 'IterBasedTrainLoop'
            assert 'val_begin' in inspect.signature(IterBasedTrainLoop).parameters
            continue
        node = cfg
        parts = key.split('.')
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        assert parts[-1] in node, key
