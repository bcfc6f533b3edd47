"""tools/test.py and --resume refuse a checkpoint that does not fit the model (issue 27, item 2):
a renamed key, a missing module or a reshaped tensor ends in one line listing them, exit code 2,
and nothing is scored, dumped or trained."""
import pytest
import torch

import splattingocc.engine  # noqa: F401
from splattingocc.cli import test as test_tool
from splattingocc.cli import train as train_tool
from splattingocc.engine.checkpoint import check_checkpoint_fits
from splattingocc.engine.launch import run_main
from splattingocc.errors import UserError
from toy_components import TOY_CONFIG, unique_name


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('strict')
    runner = train_tool.main([TOY_CONFIG, '--work-dir', str(work_dir), '--cfg-options',
                              f'experiment_name={unique_name()}'])
    return dict(ckpt=work_dir / 'iter_8.pth', model=runner.model)


def _edited(src, dst, edit):
    ckpt = torch.load(src, map_location='cpu', weights_only=True)
    edit(ckpt['state_dict'])
    torch.save(ckpt, dst)
    return dst


def _rename(state):
    state['net.zero.weight'] = state.pop('net.0.weight')


def _reshape(state):
    state['cls.weight'] = torch.zeros(4, 8)


def _drop_module(state):
    for key in [k for k in state if k.startswith('net.')]:
        del state[key]


@pytest.mark.parametrize('edit, expected', [
    (_rename, ['1 missing: net.0.weight', '1 unexpected: net.zero.weight']),
    (_reshape, ['1 of another shape: cls.weight (checkpoint [4, 8], model [3, 8])']),
    (_drop_module, ['4 missing: net.* (4 keys)']),
])
def test_test_tool_refuses_a_checkpoint_that_does_not_fit(trained, tmp_path, capsys, edit,
                                                          expected):
    bad = _edited(trained['ckpt'], tmp_path / 'bad.pth', edit)
    work, dump = tmp_path / 'work', tmp_path / 'dump'
    rc = run_main(test_tool.main, [TOY_CONFIG, str(bad), '--work-dir', str(work), '--dump-dir',
                                   str(dump), '--cfg-options', f'experiment_name={unique_name()}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f'checkpoint {bad} does not fit the model of this config' in err[0]
    for part in expected:
        assert part in err[0], err[0]
    assert not list(work.glob('*/metrics.json')) and not dump.exists()  # nothing scored


def test_resume_refuses_a_checkpoint_that_does_not_fit(trained, tmp_path, capsys):
    bad = _edited(trained['ckpt'], tmp_path / 'bad.pth', _rename)
    work = tmp_path / 'work'
    rc = run_main(train_tool.main, [TOY_CONFIG, '--resume', str(bad), '--work-dir', str(work),
                                    '--cfg-options', f'experiment_name={unique_name()}'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert f'--resume checkpoint {bad} does not fit' in err[0] and 'net.zero.weight' in err[0]
    assert not list(work.glob('*.pth'))  # nothing trained
    # --resume without a value: the work dir's last checkpoint is checked the same way
    (work / 'last_checkpoint').write_text(str(bad))
    rc = run_main(train_tool.main, [TOY_CONFIG, '--resume', '--work-dir', str(work),
                                    '--cfg-options', f'experiment_name={unique_name()}'])
    assert rc == 2 and 'does not fit' in capsys.readouterr().err
    assert not list(work.glob('*.pth'))


def test_a_fitting_checkpoint_passes_and_a_torn_one_is_named(trained, tmp_path):
    check_checkpoint_fits(trained['model'], str(trained['ckpt']))  # no error
    torn = tmp_path / 'torn.pth'
    torn.write_bytes(trained['ckpt'].read_bytes()[:1000])
    with pytest.raises(UserError, match=r'torn\.pth cannot be loaded'):
        check_checkpoint_fits(trained['model'], str(torn))
