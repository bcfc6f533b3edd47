"""Matplotlib figures of occupancy grids: top-down class maps, a 3D view, one figure per frame.

Axes: the Occ3D grid [X, Y, Z] is in the ego frame (x forward, y left, z up). Top-down panels
show x upwards and y to the left (the view from above, facing forward). Free voxels are
transparent. Nothing here chooses a backend; callers (scripts) select 'Agg'.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from .palette import OCC3D_COLORS

__all__ = ['top_down_labels', 'labels_to_rgba', 'draw_top_down', 'draw_voxels_3d',
           'camera_grid', 'occ_frame_figure']


def camera_grid(camera_names: Sequence[str]):
    """Rows of camera names for display: front cameras, then back ones, each left to right
    (names containing 'LEFT' first, 'RIGHT' last), as surround views are usually shown."""
    def side(name):
        n = name.upper()
        return 0 if 'LEFT' in n else 2 if 'RIGHT' in n else 1

    front = sorted([c for c in camera_names if 'BACK' not in c.upper()], key=side)
    back = sorted([c for c in camera_names if 'BACK' in c.upper()], key=side)
    return [row for row in (front, back) if row]


def top_down_labels(semantics: np.ndarray,  # [X, Y, Z] int
                    free_label: int,
                    mask: Optional[np.ndarray] = None) -> np.ndarray:  # [X, Y, Z]
    """[X, Y]: the class of the highest non-free voxel of each column, ``free_label`` if none.

    With ``mask``, only voxels inside the mask count.
    """
    semantics = np.asarray(semantics)
    assert semantics.ndim == 3, semantics.shape
    occ = semantics != free_label  # [X, Y, Z]
    if mask is not None:
        assert np.shape(mask) == semantics.shape, (np.shape(mask), semantics.shape)
        occ &= np.asarray(mask).astype(bool)
    Z = semantics.shape[2]
    top = Z - 1 - np.argmax(occ[:, :, ::-1], axis=2)  # [X, Y] highest occupied z
    cls = np.take_along_axis(semantics, top[..., None], axis=2)[..., 0]  # [X, Y]
    return np.where(occ.any(axis=2), cls, free_label)


def labels_to_rgba(labels: np.ndarray, free_label: int) -> np.ndarray:
    """Class ids [...] -> RGBA float [..., 4] in 0..1; free (and unknown ids) transparent."""
    labels = np.asarray(labels)
    rgba = np.zeros(labels.shape + (4, ), dtype=np.float32)
    ok = (labels >= 0) & (labels < len(OCC3D_COLORS)) & (labels != free_label)
    rgba[ok, :3] = OCC3D_COLORS[labels[ok]] / 255.0
    rgba[ok, 3] = 1.0
    return rgba


def draw_top_down(ax, semantics: np.ndarray,  # [X, Y, Z]
                  pc_range: Sequence[float], free_label: int, title: str = '',
                  mask: Optional[np.ndarray] = None,  # [X, Y, Z]
                  shade_mask: bool = False) -> None:
    """Top-down class map; with ``shade_mask`` the columns outside ``mask`` are grey."""
    labels = top_down_labels(semantics, free_label, mask if not shade_mask else None)
    rgba = labels_to_rgba(labels, free_label)  # [X, Y, 4]
    extent = (pc_range[1], pc_range[4], pc_range[0], pc_range[3])  # (y_min, y_max, x_min, x_max)
    if shade_mask and mask is not None:
        seen = np.asarray(mask).astype(bool).any(axis=2)  # [X, Y]
        grey = np.zeros(seen.shape + (4, ), np.float32)
        grey[~seen] = (0.55, 0.55, 0.55, 0.6)
        ax.imshow(rgba, origin='lower', extent=extent, interpolation='nearest')
        ax.imshow(grey, origin='lower', extent=extent, interpolation='nearest')
    else:
        ax.imshow(rgba, origin='lower', extent=extent, interpolation='nearest')
    ax.invert_xaxis()  # y to the left
    ax.set_xlabel('y (m)')
    ax.set_ylabel('x (m)')
    ax.set_facecolor('white')
    ax.plot([0], [0], marker='^', color='k', markersize=6)  # ego
    if title:
        ax.set_title(title, fontsize=10)


def draw_voxels_3d(ax, semantics: np.ndarray,  # [X, Y, Z]
                   pc_range: Sequence[float], voxel_size, free_label: int, title: str = '',
                   max_points: int = 40000, seed: int = 0) -> None:
    """Scatter of the occupied voxel centres coloured by class (subsampled to ``max_points``)."""
    semantics = np.asarray(semantics)
    vs = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3, ))
    idx = np.argwhere(semantics != free_label)  # [N, 3]
    if len(idx) > max_points:
        idx = idx[np.random.default_rng(seed).choice(len(idx), max_points, replace=False)]
    centres = np.asarray(pc_range[:3]) + (idx + 0.5) * vs  # [N, 3]
    colors = OCC3D_COLORS[semantics[idx[:, 0], idx[:, 1], idx[:, 2]]] / 255.0
    ax.scatter(centres[:, 0], centres[:, 1], centres[:, 2], c=colors, s=0.6, marker='s',
               depthshade=False, linewidths=0)
    ax.set_xlim(pc_range[0], pc_range[3])
    ax.set_ylim(pc_range[1], pc_range[4])
    ax.set_zlim(pc_range[2], pc_range[5])
    try:
        ax.set_box_aspect((pc_range[3] - pc_range[0], pc_range[4] - pc_range[1],
                           3 * (pc_range[5] - pc_range[2])))
    except AttributeError:  # old matplotlib
        pass
    ax.view_init(elev=35, azim=-160)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def occ_frame_figure(pred: np.ndarray,  # [X, Y, Z]
                     class_names: Sequence[str],
                     pc_range: Sequence[float],
                     voxel_size,
                     free_label: int,
                     gt: Optional[np.ndarray] = None,  # [X, Y, Z]
                     mask_camera: Optional[np.ndarray] = None,  # [X, Y, Z]
                     images: Optional[Dict[str, np.ndarray]] = None,  # {camera: [H, W, 3]}
                     camera_names: Optional[Sequence[str]] = None,
                     title: str = '',
                     draw_3d: bool = True):
    """One frame: camera images (if given; laid out by :func:`camera_grid` of ``camera_names``,
    default the keys of ``images``), prediction / gt / gt-in-camera-mask top-down, a 3D view of the
    prediction, and a legend of the classes present. Returns the Figure."""
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec
    from matplotlib.patches import Patch

    has_img = bool(images)
    layout = camera_grid(list(camera_names or (images or {}).keys()))
    n_bev = 1 + (gt is not None) + (gt is not None and mask_camera is not None) + int(draw_3d)
    fig = plt.figure(figsize=(max(4.2 * n_bev, 13), 11 if has_img else 6))
    rows = [1] * len(layout) + [2.2] if has_img else [1]
    gs = GridSpec(len(rows), 1, figure=fig, height_ratios=rows, hspace=0.15, left=0.04,
                  right=0.98, top=0.93, bottom=0.1)
    if has_img:
        for r, row in enumerate(layout):
            sub = gs[r].subgridspec(1, max(len(x) for x in layout), wspace=0.02)
            for c, cam in enumerate(row):
                ax = fig.add_subplot(sub[c])
                img = images.get(cam)
                if img is not None:
                    ax.imshow(img)
                else:
                    ax.text(0.5, 0.5, 'no image', ha='center', va='center')
                ax.set_title(cam, fontsize=8)
                ax.set_axis_off()
    sub = gs[-1].subgridspec(1, n_bev, wspace=0.25)
    k = 0
    ax = fig.add_subplot(sub[k])
    draw_top_down(ax, pred, pc_range, free_label, 'prediction (top-down)')
    if gt is not None:
        k += 1
        draw_top_down(fig.add_subplot(sub[k]), gt, pc_range, free_label, 'ground truth')
        if mask_camera is not None:
            k += 1
            draw_top_down(fig.add_subplot(sub[k]), gt, pc_range, free_label,
                          'gt in mask_camera (grey: unseen)', mask=mask_camera, shade_mask=True)
    if draw_3d:
        k += 1
        ax3 = fig.add_subplot(sub[k], projection='3d')
        draw_voxels_3d(ax3, pred, pc_range, voxel_size, free_label, 'prediction (3D)')
    present = set(np.unique(pred).tolist())
    if gt is not None:
        present |= set(np.unique(gt).tolist())
    handles = [Patch(facecolor=OCC3D_COLORS[i] / 255.0, edgecolor='k', linewidth=0.3,
                     label=f'{i} {name}') for i, name in enumerate(class_names)
               if i != free_label and i in present and i < len(OCC3D_COLORS)]
    if handles:
        fig.legend(handles=handles, loc='lower center', ncol=min(len(handles), 9), fontsize=8,
                   frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig
