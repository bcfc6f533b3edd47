"""Small numpy helpers for rigid transforms and quaternions ([w, x, y, z], as nuScenes stores them).

Everything here is float64 numpy; the generator never inverts a rigid 4x4 with a general inverse.
"""
from __future__ import annotations

import numpy as np


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion [w, x, y, z] (normalised here)."""
    q = np.asarray(q, dtype=np.float64)
    assert q.shape == (4,), q.shape
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R) -> np.ndarray:
    """Unit quaternion [w, x, y, z] (w >= 0) of a rotation matrix [3, 3].

    The matrix is first projected onto the nearest rotation (SVD), so float32-rounded matrices from
    info files are accepted.
    """
    R = np.asarray(R, dtype=np.float64)
    assert R.shape == (3, 3), R.shape
    u, _, vt = np.linalg.svd(R)
    R = u @ vt
    # Shepperd's method: pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 for stability.
    tr = np.trace(R)
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def yaw_quat(yaw: float) -> np.ndarray:
    """Quaternion [w, x, y, z] of a rotation by ``yaw`` radians about +z."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def yaw_matrix(yaw) -> np.ndarray:
    """Rotation(s) about +z: yaw [...] -> [..., 3, 3]."""
    yaw = np.asarray(yaw, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    z, o = np.zeros_like(yaw), np.ones_like(yaw)
    rows = [np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)]
    return np.stack(rows, -2)


def make_transform(R, t) -> np.ndarray:
    """4x4 rigid transform from a rotation [3, 3] and a translation [3]."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def pose_matrix(translation, rotation_wxyz) -> np.ndarray:
    """4x4 transform of a nuScenes record (``translation`` [3], ``rotation`` [w, x, y, z])."""
    return make_transform(quat_to_matrix(rotation_wxyz), translation)


def rigid_inverse_np(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms [..., 4, 4] as [R^T, -R^T t]."""
    T = np.asarray(T, dtype=np.float64)
    assert T.shape[-2:] == (4, 4), T.shape
    Rt = np.swapaxes(T[..., :3, :3], -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum('...ij,...j->...i', Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out

