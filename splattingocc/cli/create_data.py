"""Dataset creation and preparation.

    # a procedural dataset in the exact nuScenes / Occ3D formats
    python tools/create_data.py synthetic --root data/synthetic-nuscenes [--scenes N]
        [--samples-per-scene M] [--seed S] [--overwrite]
    # info pkls and 2D labels (real nuScenes or the synthetic dataset), with nuscenes-devkit
    python tools/create_data.py nuscenes --root DATA --version v1.0-mini|v1.0-trainval
        [--out-dir DATA] [--sweeps K]
"""
import argparse
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)

    syn = sub.add_parser('synthetic', help='generate the synthetic nuScenes/Occ3D dataset')
    syn.add_argument('--root', default='data/synthetic-nuscenes', help='output folder')
    syn.add_argument('--scenes', type=int, default=None, help='number of scenes (<= 10)')
    syn.add_argument('--samples-per-scene', type=int, default=None, help='keyframes per scene')
    syn.add_argument('--seed', type=int, default=0)
    syn.add_argument('--overwrite', action='store_true',
                     help='replace an existing --root (the new dataset is renamed into place '
                     'once complete)')
    syn.add_argument('--image-size', type=int, nargs=2, default=(400, 225),
                     metavar=('W', 'H'), help='stored camera image size')

    nus = sub.add_parser('nuscenes', help='write info pkls and 2D labels with nuscenes-devkit')
    nus.add_argument('--root', required=True, help='nuScenes data root (holds VERSION/, samples/)')
    nus.add_argument('--version', default='v1.0-mini', choices=['v1.0-mini', 'v1.0-trainval'])
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
