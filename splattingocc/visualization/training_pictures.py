"""Pictures of what the model predicts for one fixed val sample while it trains (``WatchHook``).

One picture: for one camera of the sample, the LiDAR depth and semantic labels on the camera
image next to the rendered depth and semantics (as ``tools/visualization/visual_data.py`` draws
the labels), the rendered opacity, and the top-down read-out next to the Occ3D ground truth.

Three steps, each usable alone:

* :func:`picture_pipeline`: the val pipeline with the 2D labels loaded (the val pipeline has no
  ``LoadLabels2D``, training's has augmentations).
* :func:`compute_picture`: the network on the collated sample, in eval mode without gradients ->
  :class:`TrainingPicture` (numpy arrays).
* :func:`draw_picture` -> a matplotlib ``Figure`` (no pyplot: no global state, any backend);
  :func:`figure_to_rgb` -> [H, W, 3] uint8, the pixels of the PNG and of the TensorBoard image.

Axes: rendered maps are at the label resolution (h, w) = input / ``label_downsample`` and drawn
over the input image's extent, so the label points and the renders line up; top-down panels as in
``occ_figures.draw_top_down`` (x up, y to the left).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from .occ_figures import draw_top_down
from .palette import OCC3D_COLORS

__all__ = ['TrainingPicture', 'picture_pipeline', 'compute_picture', 'draw_picture',
           'figure_to_rgb', 'find_renderer']


@dataclass
class TrainingPicture:
    """What one picture shows (numpy; h, w: label resolution; H, W: input image).

    Attributes:
        image: [H, W, 3] uint8 input image of the camera.
        label_depth: [h, w] LiDAR depth labels (camera z, m; 0 = none).
        label_semantics: [h, w] LiDAR class labels (``ignore_label`` = none).
        depth: [h, w] rendered depth (normalised by alpha; 0 = nothing hit), None without a
            renderer.
        semantics: [h, w] rendered class (argmax of the composited class probabilities), or None.
        alpha: [h, w] rendered opacity in [0, 1], or None.
        readout: [X, Y, Z] the read-out labels (what the model predicts at test time).
        gt: [X, Y, Z] Occ3D ground truth, or None.
        mask_camera: [X, Y, Z] bool, or None.
        camera: the camera's name; sample_token, scene_name: the sample.
    """

    image: np.ndarray
    label_depth: np.ndarray
    label_semantics: np.ndarray
    depth: Optional[np.ndarray]
    semantics: Optional[np.ndarray]
    alpha: Optional[np.ndarray]
    readout: np.ndarray
    gt: Optional[np.ndarray]
    mask_camera: Optional[np.ndarray]
    camera: str
    sample_token: str
    scene_name: str


def picture_pipeline(pipeline: Sequence[dict],
                     camera_names: Sequence[str]) -> Tuple[List[dict], bool]:
    """The val pipeline with the current frame's 2D labels loaded.

    Returns (pipeline, the val pipeline itself loads 2D labels). ``LoadLabels2D`` (current frame
    only) goes right after ``LoadMultiViewImages``, where the training pipelines have it, so the
    image transforms apply to the label points too.
    """
    out = [copy.deepcopy(dict(t)) if isinstance(t, dict) else t for t in pipeline]
    types = [t.get('type') if isinstance(t, dict) else type(t).__name__ for t in out]
    if 'LoadLabels2D' in types:
        return out, True
    if 'LoadMultiViewImages' not in types:
        raise ValueError('WatchHook: the val pipeline has no LoadMultiViewImages transform, so '
                         'there is no camera to draw; set the hook\'s interval to 0 to turn the '
                         'pictures off')
    at = types.index('LoadMultiViewImages') + 1
    out.insert(at, dict(type='LoadLabels2D', camera_names=list(camera_names),
                        load_adjacent=False))
    return out, False


def find_renderer(model) -> Optional[torch.nn.Module]:
    """The renderer of the first supervision module that has one (``RaySupervision``), or None."""
    for module in getattr(model, 'supervision', []):
        renderer = getattr(module, 'renderer', None)
        if isinstance(renderer, torch.nn.Module):
            return renderer
    return None


def _first(x):
    return x[0] if isinstance(x, (list, tuple)) else x


@torch.no_grad()
def compute_picture(model, batch: dict, camera_index: int, camera_name: str,
                    use_depth_labels: bool = False,
                    renderer: Optional[torch.nn.Module] = None) -> TrainingPicture:
    """The network's outputs for a collated batch of one sample (on the model's device).

    Only forward passes without gradients; the caller puts the model in eval mode (``WatchHook``
    does, and restores each module's mode after).

    Args:
        model: a ``SplattingOcc`` (unwrapped): ``extract``, ``readout``.
        batch: the data preprocessor's output for one sample with 2D labels
            (``render_viewmats`` [1, V, 4, 4], ``render_Ks`` [1, V, 3, 3], ``gt_depth`` and
            ``gt_semantics`` [1, V, h, w], ``img`` [1, N, 3, H, W], ...).
        camera_index: the camera (index into the input cameras, = the current frame's views).
        camera_name: its name, for the titles.
        use_depth_labels: pass the depth labels to the lift (as the val loop does when its own
            pipeline loads them: the oracle-depth configs).
        renderer: renders the field into the camera; None: no rendered panels.
    """
    img = batch['img']  # [1, N, 3, H, W]
    assert img.dim() == 5 and img.shape[0] == 1, img.shape
    N = img.shape[1]
    assert 0 <= camera_index < N, (camera_index, N)
    gt_depth = batch['gt_depth'].float()  # [1, V, h, w]
    gt_sem = batch['gt_semantics']  # [1, V, h, w]
    _, _, h, w = gt_depth.shape
    depth_labels = gt_depth[:, :N] if use_depth_labels else None
    outputs = model.extract(img, batch['cam2img'], batch['cam2ego'], depth_labels)
    readout = model.readout(outputs.field)[0]  # [X, Y, Z]

    depth = semantics = alpha = None
    if renderer is not None:
        from ..structures import Cameras
        cams = Cameras(viewmats=batch['render_viewmats'][:, camera_index:camera_index + 1].float(),
                       Ks=batch['render_Ks'][:, camera_index:camera_index + 1].float(),
                       width=w, height=h)
        out = renderer(outputs.field.renderable(False), cams, None)  # dense: [1, 1, h, w, ...]
        depth = out.depth.reshape(h, w).float().cpu().numpy()
        alpha = out.alpha.reshape(h, w).float().cpu().numpy()
        feats = out.features.reshape(h, w, -1)  # [h, w, K] composited class probabilities
        semantics = feats.argmax(-1).cpu().numpy()

    def grid(key):
        value = batch.get(key)
        return None if value is None else value[0].cpu().numpy()

    meta = batch.get('meta') or {}
    image = img[0, camera_index].permute(1, 2, 0).float().cpu().numpy()  # [H, W, 3]
    return TrainingPicture(
        image=np.clip(image, 0, 255).astype(np.uint8),
        label_depth=gt_depth[0, camera_index].cpu().numpy(),
        label_semantics=gt_sem[0, camera_index].cpu().numpy(),
        depth=depth, semantics=semantics, alpha=alpha,
        readout=readout.cpu().numpy(),
        gt=grid('voxel_semantics'),
        mask_camera=None if grid('mask_camera') is None else grid('mask_camera').astype(bool),
        camera=str(camera_name),
        sample_token=str(_first(meta.get('sample_token', ''))),
        scene_name=str(_first(meta.get('scene_name', ''))))


def _label_points(label: np.ndarray,  # [h, w]
                  empty, scale: Tuple[float, float]):
    """(x, y, value) of the labelled pixels, in input-image pixel coordinates (centres)."""
    ys, xs = np.nonzero(label != empty)
    return (xs + 0.5) * scale[0], (ys + 0.5) * scale[1], label[ys, xs]


def draw_picture(pic: TrainingPicture, pc_range: Sequence[float], free_label: int,
                 class_names: Optional[Sequence[str]] = None, ignore_label: int = 255,
                 max_depth: Optional[float] = None, title: str = '', dpi: int = 72):
    """The picture as a matplotlib ``Figure`` (Agg canvas attached; see the module docstring).

    Args:
        pic: from :func:`compute_picture`.
        pc_range: the Occ3D grid's box (x0, y0, z0, x1, y1, z1).
        free_label, ignore_label: the free class of the grids, the 'no label' value of the maps.
        class_names: names for the legend (index = class id); None: ids only.
        max_depth: top of the depth colour scale (m); None: the 99th percentile of the depth
            labels rounded up to 10 m (fixed for a fixed sample, so pictures compare over time).
        title: the figure's title.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    H, W = pic.image.shape[:2]
    h, w = pic.label_depth.shape
    scale = (W / w, H / h)
    extent = (0, W, H, 0)
    if max_depth is None:
        labelled = pic.label_depth[pic.label_depth > 0]
        top = float(np.percentile(labelled, 99)) if labelled.size else 50.0
        max_depth = max(10.0, 10.0 * np.ceil(top / 10.0))
    marker = 4.0 * min(1.0, 256.0 / W)

    cam_w = 3.4
    cam_h = cam_w * H / W
    bev = 2 * cam_h + 0.45
    fig = Figure(figsize=(3 * cam_w + 2 * bev + 2.2, 2 * cam_h + 1.0), dpi=dpi)
    FigureCanvasAgg(fig)
    outer = fig.add_gridspec(1, 3, width_ratios=[3 * cam_w + 0.2, 2 * bev + 0.9, 1.6],
                             left=0.01, right=0.995, top=0.86, bottom=0.1, wspace=0.07)
    cams = outer[0].subgridspec(2, 3, wspace=0.05, hspace=0.18)
    tops = outer[1].subgridspec(1, 2, wspace=0.3)

    def cam_axes(r, c, text):
        ax = fig.add_subplot(cams[r, c])
        ax.set_xlim(0, W)
        ax.set_ylim(H, 0)
        ax.set_title(text, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        return ax

    def missing(ax):
        ax.set_facecolor('0.85')
        ax.text(0.5, 0.5, 'no renderer in\nmodel.supervision', ha='center', va='center',
                transform=ax.transAxes, fontsize=8)

    dim = (pic.image.astype(np.float32) * 0.55).astype(np.uint8)
    # LiDAR depth labels on the image | rendered depth | rendered opacity
    ax = cam_axes(0, 0, f'{pic.camera}: LiDAR depth labels')
    ax.imshow(dim, extent=extent)
    x, y, d = _label_points(pic.label_depth, 0, scale)
    sc = ax.scatter(x, y, c=d, s=marker, cmap='turbo', vmin=0, vmax=max_depth, linewidths=0)
    ax = cam_axes(0, 1, 'rendered depth (alpha > 0.05)')
    if pic.depth is not None:
        depth = np.ma.masked_where(pic.alpha < 0.05, pic.depth)
        ax.set_facecolor('black')
        ax.imshow(depth, extent=extent, cmap='turbo', vmin=0, vmax=max_depth,
                  interpolation='nearest')
    else:
        missing(ax)
    cax = ax.inset_axes([0.86, 0.08, 0.03, 0.84])
    cb = fig.colorbar(sc, cax=cax)
    cb.ax.tick_params(labelsize=6, colors='white')
    cb.set_label('m', fontsize=6, color='white')
    ax = cam_axes(0, 2, 'rendered opacity')
    if pic.alpha is not None:
        im = ax.imshow(pic.alpha, extent=extent, cmap='gray', vmin=0, vmax=1,
                       interpolation='nearest')
        cax = ax.inset_axes([0.86, 0.08, 0.03, 0.84])
        cb = fig.colorbar(im, cax=cax)
        cb.ax.tick_params(labelsize=6, colors='tab:red')
    else:
        missing(ax)

    # LiDAR semantic labels on the image | rendered semantics | the input image
    ax = cam_axes(1, 0, 'LiDAR semantic labels')
    ax.imshow(dim, extent=extent)
    x, y, lab = _label_points(pic.label_semantics, ignore_label, scale)
    colours = OCC3D_COLORS[np.clip(lab, 0, len(OCC3D_COLORS) - 1)] / 255.0
    ax.scatter(x, y, c=colours, s=marker, linewidths=0)
    ax = cam_axes(1, 1, 'rendered semantics (faded by opacity)')
    if pic.semantics is not None:
        rgb = OCC3D_COLORS[np.clip(pic.semantics, 0, len(OCC3D_COLORS) - 1)] / 255.0
        a = np.clip(pic.alpha, 0.0, 1.0)[..., None]
        ax.imshow(np.clip(rgb * a + (1.0 - a), 0.0, 1.0), extent=extent,
                  interpolation='nearest')
    else:
        missing(ax)
    ax = cam_axes(1, 2, 'input image')
    ax.imshow(pic.image, extent=extent)

    # top-down: read-out | ground truth (columns outside mask_camera grey)
    ax = fig.add_subplot(tops[0, 0])
    draw_top_down(ax, pic.readout, pc_range, free_label, 'read-out (top-down)')
    ax.tick_params(labelsize=7)
    ax = fig.add_subplot(tops[0, 1])
    if pic.gt is not None:
        draw_top_down(ax, pic.gt, pc_range, free_label,
                      'ground truth (grey: outside mask_camera)', mask=pic.mask_camera,
                      shade_mask=pic.mask_camera is not None)
        ax.tick_params(labelsize=7)
    else:
        ax.set_axis_off()
        ax.text(0.5, 0.5, 'no ground truth\nin the val pipeline', ha='center', va='center')

    present = set(np.unique(pic.readout).tolist()) | set(np.unique(pic.label_semantics).tolist())
    if pic.gt is not None:
        present |= set(np.unique(pic.gt).tolist())
    if pic.semantics is not None:
        present |= set(np.unique(pic.semantics).tolist())
    handles = [Patch(facecolor=OCC3D_COLORS[c] / 255.0, edgecolor='k', linewidth=0.3,
                     label=f'{c} {class_names[c]}' if class_names and c < len(class_names)
                     else str(c))
               for c in sorted(present) if c != free_label and 0 <= c < len(OCC3D_COLORS)]
    lax = fig.add_subplot(outer[2])
    lax.set_axis_off()
    if handles:
        lax.legend(handles=handles, loc='center left', fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def figure_to_rgb(fig) -> np.ndarray:
    """[H, W, 3] uint8 pixels of a figure with an Agg canvas (:func:`draw_picture`)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

