# Occ3D-nuScenes: the grid, the classes and the cameras. Every other file takes these from here.
# Source of the facts: ../shared/realdata/README.md (checked against the real labels.npz files).

# (x_min, y_min, z_min, x_max, y_max, z_max) in metres, ego frame of the keyframe
point_cloud_range = [-40.0, -40.0, -1.0, 40.0, 40.0, 5.4]
voxel_size = [0.4, 0.4, 0.4]
occ_size = [200, 200, 16]  # X, Y, Z voxels

# nuScenes-lidarseg coarse order; index 17 is free
class_names = [
    'others', 'barrier', 'bicycle', 'bus', 'car', 'construction_vehicle', 'motorcycle',
    'pedestrian', 'traffic_cone', 'trailer', 'truck', 'driveable_surface', 'other_flat',
    'sidewalk', 'terrain', 'manmade', 'vegetation', 'free'
]
num_classes = 18
free_label = 17
ignore_label = 255
# classes that move between frames: ignored on adjacent-frame rays (RenderOcc)
dynamic_classes = [2, 3, 4, 5, 6, 7, 9, 10]

camera_names = [
    'CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT'
]
