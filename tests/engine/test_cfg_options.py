"""--cfg-options merging (engine.launch.merge_cfg_options): mmengine's rules, plus _delete_ on a
list element replacing that element."""
import pytest
from mmengine.config import DictAction

from splattingocc.engine.launch import load_config
from splattingocc.errors import UserError


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
