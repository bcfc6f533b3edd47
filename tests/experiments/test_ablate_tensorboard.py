"""tools/ablate.py and TensorBoard: every arm's training run turns the watch hook's TensorBoard
on, so its events land in OUT/<budget>/<arm>/seed<s>/tensorboard, one tree for `tensorboard
--logdir OUT`; timing runs and installs without tensorboard write none."""
from fake_tools import FakeTools, make_runner, options

from splattingocc.cli import train as train_tool
from splattingocc.engine.launch import load_tool_config
from splattingocc.registry import HOOKS


def test_training_runs_write_tensorboard_into_one_tree(base, tmp_path):
    runner = make_runner(tmp_path, base, tensorboard=True)
    splat, nerf = runner.arms
    budget = runner.budgets[0]
    for arm in (splat, nerf):
        cmd = runner.train_command(arm, 0, runner.run_dir(budget, arm, 0), 40)
        opts = options(cmd)
        assert opts['default_hooks.watch.tensorboard'] == 'True'
        # what tools/train.py builds from those options: the hook with TensorBoard on, writing
        # below the run's work dir, i.e. OUT/iters-40/<arm>/seed0/tensorboard
        args = train_tool.parse_args(cmd[2:])
        cfg = load_tool_config(args.config, args.cfg_options, args.work_dir)
        hook = HOOKS.build(cfg.default_hooks.watch)
        assert hook.tensorboard and hook.tensorboard_dir == 'tensorboard'
        assert cfg.work_dir == str(tmp_path / 'out' / 'iters-40' / arm.name / 'seed0')
    timing = runner.train_command(splat, 0, 'W', 12, timing=True)
    assert 'default_hooks.watch.tensorboard' not in options(timing)


def test_without_tensorboard_no_option_and_a_note(base, tmp_path):
    lines = []
    fake = FakeTools()
    runner = make_runner(tmp_path, base, fake=fake, tensorboard=False)
    runner.progress = lines.append
    runner.run()
    assert all('default_hooks.watch.tensorboard' not in options(cmd) for _, _, cmd in fake.calls)
    assert "TensorBoard: not installed, no event files (pip install -e '.[tb]')" in lines
