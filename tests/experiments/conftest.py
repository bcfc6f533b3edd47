"""Fixtures of the splattingocc.experiments tests: the base config of the ablations."""
import pytest
from fake_tools import BASE

from splattingocc.experiments import load_base_config


@pytest.fixture(scope='module')
def base():
    return load_base_config(BASE)
