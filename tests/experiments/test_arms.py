"""splattingocc.experiments.arms: the named arms against the repository's variant configs, custom
arms and their key checks."""
import pytest
from fake_tools import VARIANTS
from mmengine.config import Config

from splattingocc.errors import UserError
from splattingocc.experiments import apply_overrides, arm_changes, config_diff, parse_arms


def test_named_arms_change_exactly_their_keys(base):
    arms = {a.name: a for a in parse_arms(['splat,nerf,3d,2d3d,seed,sparse,3d+render'], base)}
    # splat: the base itself
    assert config_diff(base, apply_overrides(base, arms['splat'].overrides)) == {}
    # nerf: RenderOcc's head (replaced, not merged), supervision list and read-out threshold,
    # from the base's renderocc variable
    nerf = config_diff(base, apply_overrides(base, arms['nerf'].overrides))
    assert {k.split('.')[1] for k in nerf} == {'head', 'supervision', 'readout'}
    assert [k for k in nerf if k.startswith('model.readout')] == ['model.readout.threshold']
    assert nerf['model.head.type'] == ('GaussianHead', 'RenderOccHead')
    assert nerf['model.supervision.0.renderer.type'] == ('TorchSplatRenderer',
                                                          'RenderOccRenderer')
    assert nerf['model.head.min_scale'][1] == '<absent>'  # replaced, not merged
    nerf_cfg = apply_overrides(base, arms['nerf'].overrides)
    assert nerf_cfg.model.supervision == base.renderocc['supervision']
    assert nerf_cfg.model.readout.threshold == base.renderocc['readout_threshold']
    # 3d / 2d3d: the supervision list, 18 classes with the argmax read-out, and the training
    # pipeline that loads the 3D labels
    expected = ['model.supervision', 'model.head.num_classes', 'model.readout.threshold',
                'train_dataloader.dataset.pipeline']
    for name in ('3d', '2d3d'):
        diff = config_diff(base, apply_overrides(base, arms[name].overrides))
        for key in diff:
            assert any(key == r or key.startswith(r + '.') for r in expected), (name, key)
        for r in expected:
            assert any(key == r or key.startswith(r + '.') for key in diff), (name, r)
        assert arm_changes(base, arms[name])['changes'].keys() == set(expected)
        assert diff['model.head.num_classes'] == (17, 18)
        assert diff['model.readout.threshold'][1] is None
    sup3d = apply_overrides(base, arms['3d'].overrides).model.supervision
    assert [s['type'] for s in sup3d] == ['VolumeSupervision', 'LSSDepthLoss']
    assert sup3d[0]['mask_camera'] and sup3d[0]['grid_size'] is None
    sup2d3d = apply_overrides(base, arms['2d3d'].overrides).model.supervision
    assert [s['type'] for s in sup2d3d] == ['RaySupervision', 'LSSDepthLoss',
                                            'VolumeSupervision']
    assert sup2d3d[-1] == sup3d[0]  # one 3D loss for the bound and 2d3d
    # seed: the head only
    seed = config_diff(base, apply_overrides(base, arms['seed'].overrides))
    assert {k.split('.')[1] for k in seed} == {'head'}
    assert seed['model.head.type'] == ('GaussianHead', 'FixedGaussianHead')
    # sparse: the head only, replaced (not merged) by the base's sparse_head
    sparse = config_diff(base, apply_overrides(base, arms['sparse'].overrides))
    assert {k.split('.')[1] for k in sparse} == {'head'}
    assert sparse['model.head.type'] == ('GaussianHead', 'SparseGaussianHead')
    assert sparse['model.head.query_window'][1] == '<absent>'
    assert apply_overrides(base, arms['sparse'].overrides).model.head == base.sparse_head
    # 3d+render: the 3d arm with the base's render_consistency appended to its supervision
    rc = apply_overrides(base, arms['3d+render'].overrides)
    want = dict(arms['3d'].overrides)
    want['model.supervision'] = want['model.supervision'] + [base.render_consistency.to_dict()]
    assert config_diff(rc, apply_overrides(base, want)) == {}
    assert [s['type'] for s in rc.model.supervision] == [
        'VolumeSupervision', 'LSSDepthLoss', 'RenderConsistencySupervision']
    no_rc = Config(base.to_dict())
    no_rc.pop('render_consistency')
    with pytest.raises(UserError, match='render_consistency'):
        parse_arms(['3d+render'], no_rc)
    # the same configs as the hand-written variant configs of the repository
    for name, path in VARIANTS.items():
        variant = Config.fromfile(str(path))
        assert config_diff(variant, apply_overrides(base, arms[name].overrides)) == {}, name


def test_custom_arms_parse_and_check_keys(base):
    arms = parse_arms(['splat,uni=model.supervision.0.pixel_sampler.mode=uniform,'
                       'model.supervision.0.pixel_sampler.num_rays=512',
                       'iso=model.head.isotropic=True,model.head.max_scale=[0.4,0.4,0.4]'], base)
    assert [a.name for a in arms] == ['splat', 'uni', 'iso']
    assert arms[1].overrides == {'model.supervision.0.pixel_sampler.mode': 'uniform',
                                 'model.supervision.0.pixel_sampler.num_rays': 512}
    assert arms[2].overrides == {'model.head.isotropic': True,
                                 'model.head.max_scale': [0.4, 0.4, 0.4]}
    diff = config_diff(base, apply_overrides(base, arms[1].overrides))
    assert set(diff) == {'model.supervision.0.pixel_sampler.mode',
                         'model.supervision.0.pixel_sampler.num_rays'}
    with pytest.raises(UserError, match='pixel_samplr'):
        parse_arms(['typo=model.supervision.0.pixel_samplr.mode=uniform'], base)
    with pytest.raises(UserError, match='needs an arm name'):
        parse_arms(['model.supervision.0.pixel_sampler.mode=uniform'], base)
    with pytest.raises(UserError, match='unknown arm'):
        parse_arms(['splat,gaussian'], base)
    with pytest.raises(UserError, match='twice'):
        parse_arms(['nerf,nerf'], base)
    with pytest.raises(UserError, match='splatting renderer'):
        parse_arms(['splat'], Config.fromfile(str(VARIANTS['nerf'])))
    no_sparse = Config(base.to_dict())
    no_sparse.pop('sparse_head')
    with pytest.raises(UserError, match='sparse_head'):
        parse_arms(['sparse'], no_sparse)
    no_renderocc = Config(base.to_dict())
    no_renderocc.pop('renderocc')
    with pytest.raises(UserError, match='renderocc'):
        parse_arms(['nerf'], no_renderocc)


def test_arm_names_may_hold_a_plus_but_not_start_with_one(base):
    arms = parse_arms(['3d+render,a+b=model.head.init_opacity=0.2'], base)
    assert [a.name for a in arms] == ['3d+render', 'a+b']
    for bad in ('+a=model.head.init_opacity=0.2', 'a/b=model.head.init_opacity=0.2',
                'a b=model.head.init_opacity=0.2'):
        with pytest.raises(UserError):
            parse_arms([bad], base)
