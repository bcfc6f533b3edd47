"""Dataset creation and preparation.

    # a procedural dataset in the exact nuScenes / Occ3D formats: train/val scenes (v1.0-mini)
    # and held-out test scenes (v1.0-test)
    python tools/create_data.py synthetic --root data/synthetic-nuscenes [--scenes N]
        [--samples-per-scene M] [--seed S] [--test-scenes T] [--test-seed S2] [--overwrite]
    # info pkls and 2D labels (real nuScenes or the synthetic dataset), with nuscenes-devkit:
    # v1.0-mini / v1.0-trainval -> *_infos_train.pkl + *_infos_val.pkl; v1.0-test (labelled in
    # the synthetic dataset only) -> *_infos_test.pkl
    python tools/create_data.py nuscenes --root DATA --version v1.0-mini|v1.0-trainval|v1.0-test
        [--out-dir DATA] [--sweeps K]

Protocol: train on train, choose every threshold and hyperparameter on val, report on test.
"""
import argparse
import time

# the generator's default test size, without importing it (and its dependencies) for --help
DEFAULT_TEST_SCENES = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    syn = sub.add_parser('synthetic', help='generate the synthetic nuScenes/Occ3D dataset')
    syn.add_argument('--root', default='data/synthetic-nuscenes', help='output folder')
    syn.add_argument('--scenes', type=int, default=None, help='number of scenes (<= 10)')
    syn.add_argument('--samples-per-scene', type=int, default=None, help='keyframes per scene')
    syn.add_argument('--seed', type=int, default=0)
    syn.add_argument('--test-scenes', type=int, default=None, metavar='T',
                     help='held-out test scenes written as v1.0-test, named after devkit\'s test '
                     'split, with --samples-per-scene keyframes each (default: '
                     f'{DEFAULT_TEST_SCENES}; 0 = no test split)')
    syn.add_argument('--test-seed', type=int, default=None,
                     help='world seed of the test scenes (default: --seed; their random stream '
                     'is separate from the train/val scenes either way)')
    syn.add_argument('--overwrite', action='store_true',
                     help='replace an existing --root (the new dataset is renamed into place '
                     'once complete)')
    syn.add_argument('--image-size', type=int, nargs=2, default=(400, 225),
                     metavar=('W', 'H'), help='stored camera image size')

    nus = sub.add_parser('nuscenes', help='write info pkls and 2D labels with nuscenes-devkit')
    nus.add_argument('--root', required=True, help='nuScenes data root (holds VERSION/, samples/)')
    nus.add_argument('--version', default='v1.0-mini',
                     choices=['v1.0-mini', 'v1.0-trainval', 'v1.0-test'],
                     help='v1.0-test: the labelled test split of a synthetic dataset '
                     '(nuscenes_infos_test.pkl); the real v1.0-test has no labels')
    nus.add_argument('--out-dir', default=None, help='where to write (default: --root)')
    nus.add_argument('--sweeps', type=int, default=0,
                     help='adjacent keyframes on each side stored for auxiliary rays')
    nus.add_argument('--prefix', default='nuscenes', help='info pkl name prefix')
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    if args.command == 'synthetic':
        from splattingocc.datasets.synthetic import generate_synthetic_dataset
        kwargs = dict(seed=args.seed, image_size=tuple(args.image_size),
                      overwrite=args.overwrite)
        if args.scenes is not None:
            kwargs['scenes'] = args.scenes
        if args.samples_per_scene is not None:
            kwargs['samples_per_scene'] = args.samples_per_scene
        if args.test_scenes is not None:
            kwargs['test_scenes'] = args.test_scenes
        if args.test_seed is not None:
            kwargs['test_seed'] = args.test_seed
        summary = generate_synthetic_dataset(args.root, **kwargs)
        print(f'[create_data] synthetic dataset written to {args.root} in {time.time() - t0:.1f} s')
        for key, value in summary.items():
            print(f'  {key}: {value}')
    else:
        from splattingocc.datasets.nuscenes_converter import create_nuscenes_infos
        create_nuscenes_infos(args.root, args.version, args.out_dir or args.root,
                              sweeps=args.sweeps, prefix=args.prefix, progress=True)
        print(f'[create_data] nuScenes infos written to {args.out_dir or args.root} '
              f'in {time.time() - t0:.1f} s')
    return 0
