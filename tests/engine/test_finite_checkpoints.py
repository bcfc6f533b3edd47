"""Only checkpoints whose every tensor is finite are recommended or written (issue 27, item 3): a
BatchNorm running_var that overflows while the losses stay finite stops training at that
iteration, naming the buffer, and the checkpoint the message recommends is all finite; without
the hook's weight check the checkpoint hook refuses to write the damaged weights."""
import re

import pytest
import torch
from torch import nn

import splattingocc.engine  # noqa: F401
from splattingocc.cli import train as train_tool
from splattingocc.engine.checkpoint import first_non_finite
from splattingocc.engine.launch import run_main
from splattingocc.errors import TrainingDivergedError
from splattingocc.registry import MODELS
from toy_components import TOY_CONFIG, ToyOccModel, toy_runner, unique_name


@MODELS.register_module(force=True)
class ToyBatchNormModel(ToyOccModel):
    """The toy model behind a BatchNorm; at training call ``blow_up_at_iter`` the input is scaled
    by 1e20, so the batch variance overflows float32: the normalised output (and the loss) stays
    finite while ``bn.running_var`` becomes inf, as with a far too large learning rate."""

    def __init__(self, blow_up_at_iter: int = -1, **kwargs):
        super().__init__(**kwargs)
        self.bn = nn.BatchNorm1d(kwargs.get('num_features', 8))
        self.blow_up_at_iter = blow_up_at_iter

    def forward(self, x, target=None, voxel_semantics=None, meta=None, mode='tensor'):
        if mode == 'loss' and self._train_calls + 1 == self.blow_up_at_iter:
            x = x * 1e20
        return super().forward(self.bn(x), target, voxel_semantics, meta, mode)


OPTIONS = ['model.type=ToyBatchNormModel', 'model.blow_up_at_iter=3',
           'default_hooks.checkpoint.interval=1']


def _all_finite(path) -> bool:
    state = torch.load(path, map_location='cpu', weights_only=True)['state_dict']
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


def test_overflowed_buffer_stops_training_and_the_recommended_checkpoint_is_finite(tmp_path,
                                                                                   capsys):
    rc = run_main(train_tool.main, [TOY_CONFIG, '--work-dir', str(tmp_path), '--cfg-options',
                                    f'experiment_name={unique_name()}', *OPTIONS])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, err
    assert re.search(r'error: the model buffer bn\.running_var holds [1-8] of 8 values NaN/inf '
                     r'\(0 NaN\) after iteration 3 \(the losses were finite\)', err[0]), err[0]
    recommended = tmp_path / 'iter_2.pth'
    assert f'The last complete checkpoint is {recommended}' in err[0]
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == ['iter_1.pth', 'iter_2.pth']
    assert _all_finite(recommended)
    assert (tmp_path / 'last_checkpoint').read_text() == str(recommended)


def test_checkpoint_hook_refuses_non_finite_weights(tmp_path):
    """With the weight check of FiniteLossHook off, the checkpoint hook still refuses."""
    runner = toy_runner(TOY_CONFIG, tmp_path, options=OPTIONS + [
        'custom_hooks.0.check_weights=False'])
    with pytest.raises(TrainingDivergedError) as info:
        runner.train()
    message = str(info.value)
    assert message.startswith('not saving iter_3.pth: the model buffer bn.running_var holds')
    assert f'The last checkpoint with finite tensors is {tmp_path / "iter_2.pth"}' in message
    assert not (tmp_path / 'iter_3.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_2.pth')
    assert runner.message_hub.get_info('last_ckpt') == str(tmp_path / 'iter_2.pth')
    assert first_non_finite(runner.model).startswith('buffer bn.running_var')
    assert first_non_finite(nn.Linear(2, 2)) is None
