"""The logic of the command-line tools, one module per tool.

Each module has ``build_parser()``, ``parse_args(argv)`` and ``main(argv=None)`` (plus the tool's
own helpers); the files under ``tools/`` only run ``main`` through
:func:`splattingocc.engine.launch.run_main`. Their docstrings are the tools' usage texts.

=================  ==========================================
module             entry point
=================  ==========================================
``train``          ``tools/train.py``
``test``           ``tools/test.py``
``create_data``    ``tools/create_data.py``
``eval_occ``       ``tools/eval_occ.py``
``visual``         ``tools/visualization/visual.py``
``visual_data``    ``tools/visualization/visual_data.py``
``baselines``      ``tools/analysis/baselines.py``
``compare_occ``    ``tools/analysis/compare_occ.py``
``diagnose``       ``tools/analysis/diagnose.py``
``fit_gaussians``  ``tools/analysis/fit_gaussians.py``
``probe_depth``    ``tools/analysis/probe_depth.py``
=================  ==========================================

Nothing is imported here: ``import splattingocc.cli.<tool>`` loads one tool only. Code two tools
share lives in the package proper (e.g. :mod:`splattingocc.evaluation.standalone`), not in
another tool's module.
"""
