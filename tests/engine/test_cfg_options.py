"""--cfg-options merging (engine.launch.merge_cfg_options): mmengine's rules, plus _delete_ on a
list element replacing that element, and an override of a top-level config variable refused."""
import pytest
from mmengine.config import DictAction

from splattingocc.cli import train as train_tool
from splattingocc.engine.launch import load_config, run_main
from splattingocc.errors import UserError
from splattingocc.paths import REPO_ROOT


def _options(*tokens):
    return {k: DictAction._parse_iterable(v) for k, v in (t.split('=', 1) for t in tokens)}


def test_delete_replaces_a_list_element_and_dict_rules_stay(tmp_path):
    path = tmp_path / 'cfg.py'
    path.write_text("model = dict(losses=[dict(type='A', w=1), dict(type='B', w=2, p=[1, 2])],\n"
                    "             head=dict(type='H', k=3))\n")
    cfg = load_config(str(path), _options(
        'model.losses.1._delete_=True', 'model.losses.1.type=C', 'model.losses.1.q.r=[4,5]',
        'model.losses.0.w=7', 'model.head._delete_=True', 'model.head.type=G'))
    assert cfg.model.losses[0] == dict(type='A', w=7)  # merged, as mmengine does
    assert cfg.model.losses[1].to_dict() == dict(type='C', q=dict(r=[4, 5]))  # replaced
    assert cfg.model.head.to_dict() == dict(type='G')  # mmengine's own _delete_ on a dict
    merged = load_config(str(path), _options('model.losses.1.type=C'))
    assert merged.model.losses[1].to_dict() == dict(type='C', w=2, p=[1, 2])  # no _delete_
    with pytest.raises(UserError, match='no entry 5'):
        load_config(str(path), _options('model.losses.5._delete_=True', 'model.losses.5.type=C'))


TINY = str(REPO_ROOT / 'configs/splattingocc/splattingocc-tiny-synthetic.py')


def test_top_level_variable_override_is_refused_naming_the_nested_keys(tmp_path, capsys):
    """Issue 27 item 7: `max_iters=2 data_root=/nonexistent/` used to train the default."""
    work_dir = tmp_path / 'work'
    rc = run_main(train_tool.main, [TINY, '--work-dir', str(work_dir), '--cfg-options',
                                    'max_iters=2', 'data_root=/nonexistent/'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert 'would change nothing that runs' in err[0]
    assert "max_iters: 'max_iters' is a variable of the config file" in err[0]
    assert 'set train_cfg.max_iters instead' in err[0] and 'param_scheduler.1.end' in err[0]
    assert 'train_dataloader.dataset.data_root' in err[0]
    assert not work_dir.exists()  # nothing ran
    # a dict variable: the suggestion is the nested key of its copy, rest appended
    with pytest.raises(UserError, match=r"'ray_supervision' is a variable.*copied into "
                                        r'model\.supervision\.0 .*set '
                                        r'model\.supervision\.0\.num_rays instead'):
        load_config(TINY, _options('ray_supervision.num_rays=7'))
    # a variable that no setting holds (the 2D-only config does not use volume_supervision)
    with pytest.raises(UserError, match=r"'volume_supervision' is a variable of the config file "
                                        'that no setting holds'):
        load_config(TINY, _options('volume_supervision.loss_weight=2'))
    # the nested keys themselves, and new top-level keys, merge as before
    cfg = load_config(TINY, _options('train_cfg.max_iters=2', 'model.supervision.0.num_rays=7',
                                     'experiment_name=x'))
    assert cfg.train_cfg.max_iters == 2 and cfg.model.supervision[0].num_rays == 7
    assert cfg.experiment_name == 'x'
