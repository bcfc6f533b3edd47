# Runtime shared by every SplattingOcc config: registry scope, hooks, logging, environment, seed.
# The schedules in schedules/ import this file and set the checkpoint/log cadence; a model config
# imports a schedule (which brings this runtime), not this file after the schedule.
default_scope = 'splattingocc'

default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    # progress line (iteration, lr, losses, time, data time, ETA) every `interval` iterations
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # checkpoints written to a temporary name and renamed (splattingocc/engine/checkpoint.py);
    # interval=-1: only the final one, unless a schedule sets a cadence
    checkpoint=dict(type='AtomicCheckpointHook', interval=-1, by_epoch=False, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # watch the run (splattingocc/engine/watch.py): every picture_interval iterations a PNG of
    # one val sample (rendered depth, semantics, opacity vs the LiDAR labels; top-down read-out
    # vs the ground truth) in WORK_DIR/pictures; the render share of the iteration time logged;
    # TensorBoard (pip install -e .[tb]) with --cfg-options default_hooks.watch.tensorboard=True
    watch=dict(type='WatchHook', tensorboard=False, picture_interval=100),
)
custom_hooks = [
    dict(type='FiniteLossHook'),  # stop with a clear error when a loss term becomes NaN/inf
    dict(type='RandomStateHook'),  # RNG states in checkpoints: resumed runs draw the same numbers
    dict(type='TrainingSummaryHook'),  # one final line: iterations, time, losses, checkpoint
    dict(type='PreemptionHook'),  # checkpoint + stop on SIGUSR1 or $SOCC_PREEMPT_FLAG (Slurm)
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # 'auto': tools/train.py picks nccl with CUDA, gloo on CPUs (splattingocc.engine.launch)
    dist_cfg=dict(backend='auto'),
)

# log by iteration (global iteration count also in epoch-based schedules)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
log_level = 'INFO'
vis_backends = [dict(type='LocalVisBackend')]  # scalars.json in the run's log folder
# no fixed name: each Runner's visualizer is named after its experiment (several runs per process)
visualizer = dict(type='Visualizer', vis_backends=vis_backends)

load_from = None
resume = False
# deterministic='auto': deterministic algorithms on CPUs (bit-identical reruns and resumes at no
# measurable cost), off with CUDA (speed; tools/train.py --deterministic turns them on)
randomness = dict(seed=0, deterministic='auto', diff_rank_seed=False)
