"""The layout of the command-line tools: every file under tools/ is a thin entry point over the
package (no sys.path edits, no imports of other tool files), the entry points users know stay at
tools/, the rest lives in tools/analysis/ and tools/benchmarks/, and tests import the package
instead of loading scripts by path. Checked by parsing the files (nothing under tools/ runs)."""
import ast
import importlib

import pytest

from splattingocc.paths import REPO_ROOT

TOOLS = REPO_ROOT / 'tools'
# the entry points users know (README, demo, Slurm scripts); everything else is in a subfolder
TOP_LEVEL = {'train', 'test', 'create_data', 'eval_occ', 'ablate'}
SUBFOLDERS = {'analysis', 'benchmarks', 'visualization'}


def _tool_files():
    return sorted(TOOLS.rglob('*.py'))


def _rel(path):
    return str(path.relative_to(REPO_ROOT))


def _imported_modules(tree):
    """(module name, level) of every import statement anywhere in the file."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, 0) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or '', node.level


def test_tools_are_where_users_look():
    files = _tool_files()
    assert files, f'no tools under {TOOLS}'
    top = {p.stem for p in files if p.parent == TOOLS}
    assert top <= TOP_LEVEL, f'move {sorted(top - TOP_LEVEL)} to tools/analysis or tools/benchmarks'
    folders = {p.relative_to(TOOLS).parts[0] for p in files if p.parent != TOOLS}
    assert folders <= SUBFOLDERS, sorted(folders - SUBFOLDERS)
    benchmarks = [p for p in files if p.stem.startswith('benchmark')]
    assert all(p.parent.name == 'benchmarks' for p in benchmarks), [_rel(p) for p in benchmarks]


def test_no_tool_edits_sys_path():
    offenders = [_rel(p) for p in _tool_files() if 'sys.path' in p.read_text()]
    assert offenders == [], f'{offenders} edit sys.path: import the splattingocc package instead'


def test_no_tool_imports_another_tool():
    names = {p.stem for p in _tool_files()}
    loaders = {'spec_from_file_location', 'run_path', 'import_module', '__import__', 'exec'}
    offenders = []
    for path in _tool_files():
        tree = ast.parse(path.read_text(), str(path))
        for module, level in _imported_modules(tree):
            top = module.split('.')[0]
            if level or top in names or top == 'tools':
                offenders.append(f'{_rel(path)}: imports {"." * level}{module}')
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', '')
                if name in loaders:
                    offenders.append(f'{_rel(path)}: loads code with {name}()')
    assert offenders == [], offenders


def _entry_point(path):
    """(module the tool's main comes from, docstring) of a thin entry point; AssertionError
    naming the file if it is anything more."""
    tree = ast.parse(path.read_text(), str(path))
    body = tree.body
    doc = ast.get_docstring(tree, clean=False)
    assert doc, f'{_rel(path)}: no usage docstring'
    imports = [n for n in body[1:] if isinstance(n, (ast.Import, ast.ImportFrom))]
    rest = [n for n in body[1:] if n not in imports]
    found = {(n.module if isinstance(n, ast.ImportFrom) else None,
              tuple(a.name for a in n.names)) for n in imports}
    mains = [m for m, names in found if names == ('main', )]
    assert len(mains) == 1 and mains[0].startswith('splattingocc.'), (_rel(path), found)
    assert found == {(None, ('sys', )), (mains[0], ('main', )),
                     ('splattingocc.engine.launch', ('run_main', ))}, (_rel(path), found)
    assert len(rest) == 1 and ast.unparse(rest[0]) == (
        "if __name__ == '__main__':\n    sys.exit(run_main(main))"), _rel(path)
    return mains[0], doc


@pytest.mark.parametrize('path', [p for p in _tool_files() if p.parent.name != 'benchmarks'],
                         ids=_rel)
def test_entry_points_are_thin(path):
    """Docstring, ``import sys``, the package's ``main``, ``run_main``, ``__main__``: nothing
    else. A tool of splattingocc.cli has that module's docstring (its --help text) and parser."""
    module_name, doc = _entry_point(path)
    if module_name.startswith('splattingocc.cli.'):
        assert module_name == f'splattingocc.cli.{path.stem}', (_rel(path), module_name)
        module = importlib.import_module(module_name)
        assert module.__doc__ == doc, f'{_rel(path)}: docstring differs from {module_name}'
        for name in ('build_parser', 'parse_args', 'main'):
            assert callable(getattr(module, name, None)), f'{module_name} has no {name}()'


def test_cli_modules_share_code_through_the_package_only():
    offenders = []
    for path in sorted((REPO_ROOT / 'splattingocc' / 'cli').glob('*.py')):
        tree = ast.parse(path.read_text(), str(path))
        offenders += [f'{_rel(path)}: imports {"." * level}{module}'
                      for module, level in _imported_modules(tree)
                      if level or module.startswith('splattingocc.cli')]
    assert offenders == [], offenders


def test_tests_import_the_package_not_scripts():
    loader = 'spec_from_file_location'
    offenders = [_rel(p) for p in sorted((REPO_ROOT / 'tests').rglob('*.py'))
                 if p.name != 'test_layout.py' and loader in p.read_text()]
    assert offenders == [], f'{offenders} load scripts by path: import splattingocc.cli instead'
