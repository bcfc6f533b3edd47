# RenderOcc (pmj110119/RenderOcc) on the tiny network and the synthetic data of
# splattingocc-tiny-synthetic.py: the same backbone, lift, volume encoder, data and schedule, with
# RenderOcc's head (a density and 17 logits per 0.4 m voxel, the tiny 50 x 50 x 8 volume upsampled
# to 200 x 200 x 16 before the MLPs), its volume renderer (0.2 m steps, a contracted background,
# shifted-softplus alpha, logits composited), its loss set (CE of the composited logits with its
# class weights, SILog of its rendered depth, entropy of the last transmittance and the distortion
# loss, 0.01 each; labels beyond 52 m ignored; the LSS depth loss of the lift) and its read-out
# (raw density > 8.5, i.e. one voxel's opacity > 0.00489, then the argmax of the 17 classes).
# docs/renderocc-fidelity.md: each setting against upstream's code, and what differs.
# The settings are the base's `renderocc` variable (configs/_base_/models/splattingocc_tiny.py),
# which tools/ablate.py's nerf arm applies to the splat base: this file and that arm are one config.
from mmengine.config import read_base

with read_base():
    from ..splattingocc._tiny_synthetic import *  # noqa: F401,F403

# assignments (not updates): nothing of the Gaussian head or the splat supervision is merged in
model.head = renderocc['head']  # noqa: F405
model.supervision = renderocc['supervision']  # noqa: F405
model.readout.threshold = renderocc['readout_threshold']  # noqa: F405
