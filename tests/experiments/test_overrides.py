"""splattingocc.experiments.overrides: command-line values, splitting, flattening, key checks."""
import pytest

from splattingocc.errors import UserError
from splattingocc.experiments import (check_override_keys, cli_value, config_diff,
                                      flatten_config, parse_cfg_options, parse_cli_value,
                                      split_top_level)


def test_cli_values_round_trip_or_have_no_form():
    for value in (None, True, 3, 0.5, 'uniform', [1, 2], (0.4, 0.4), [[1, 2], [3]]):
        text = cli_value(value)
        assert text is not None and parse_cli_value(text) == value, value
    assert cli_value((0.4, 0.4)) == '(0.4,0.4)' and cli_value([1, 2]) == '[1,2]'
    # dicts, pipelines and strings that would parse as something else have no command-line form
    for value in ({'a': 1}, [dict(type='X')], '1', 'a,b'):
        assert cli_value(value) is None, value


def test_split_and_parse_options():
    assert split_top_level('a=[1,2],b=(3,4),c') == ['a=[1,2]', 'b=(3,4)', 'c']
    with pytest.raises(UserError, match='unbalanced'):
        split_top_level('a=[1,2')
    assert parse_cfg_options(['a.b=1', 'c=[1,2]', 'd=x']) == (
        {'a.b': 1, 'c': [1, 2], 'd': 'x'}, {'a.b': '1', 'c': '[1,2]', 'd': 'x'})
    with pytest.raises(UserError, match='not key=value'):
        parse_cfg_options(['a.b'])


def test_flatten_diff_and_key_check(base):
    assert flatten_config({'a': {'b': 1, 'c': [dict(d=2)]}, 'e': {}}) == {
        'a.b': 1, 'a.c.0.d': 2, 'e': {}}
    assert config_diff({'a': 1, 'b': [1, 2]}, {'a': 1, 'b': [1, 2], 'c': 3}) == {
        'c': ('<absent>', 3)}
    # a new leaf in an existing dict is allowed (and returned), anything under a _delete_ too
    assert check_override_keys(base, {'model.supervision.0.pixel_sampler.mode': 'x',
                                      'model.head.new_knob': 1,
                                      'model.supervision.0.renderer._delete_': True,
                                      'model.supervision.0.renderer.anything': 2}, 'T') == ['model.head.new_knob']
    with pytest.raises(UserError, match="'pixel_samplr' is not in model"):
        check_override_keys(base, {'model.supervision.0.pixel_samplr.mode': 'x'}, 'T')
