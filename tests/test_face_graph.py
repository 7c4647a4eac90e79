"""The canonical face graph: template, K = 8 regions, Delaunay adjacency."""
import numpy as np

from emotalk.models.face_graph import (MIRROR, REGIONS, adjacency_matrix, canonical_template, delaunay_triangles,
                                    edges_from_triangles, mouth_opening, region_assignment,
                                    template_triangles)


def test_template_is_canonical_frontal_neutral_closed_lips():
    t = canonical_template()
    assert t.shape == (68, 2)
    assert np.allclose(t.mean(0), 0, atol=1e-4)
    assert np.linalg.norm(t[45] - t[36]) == np.float32(1.0) or np.isclose(np.linalg.norm(t[45] - t[36]), 1, atol=1e-4)
    mirrored = t[MIRROR] * np.array([-1, 1])
    assert np.abs(mirrored - t).max() < 1e-4  # left-right symmetric
    assert abs(float(mouth_opening(t))) < 1e-6  # closed lips
    # anatomy: brows above eyes above nose tip above mouth above chin (y grows downwards)
    assert t[17:27, 1].mean() < t[36:48, 1].mean() < t[33, 1] < t[48:68, 1].mean() < t[8, 1]
    assert t[36, 0] < t[45, 0]  # image-left eye corner (subject's right eye) is on the left


def test_regions_partition_the_68_points():
    assert len(REGIONS) == 8
    idx = sorted(i for r in REGIONS.values() for i in r)
    assert idx == list(range(68))
    assert np.bincount(region_assignment()).tolist() == [17, 5, 5, 9, 6, 6, 12, 8]


def test_adjacency_is_the_delaunay_graph():
    tri = template_triangles()
    a = adjacency_matrix()
    assert np.array_equal(a, a.T) and np.all(np.diag(a) == 0)
    edges = edges_from_triangles(tri)
    assert a.sum() / 2 == len(edges)
    # every vertex is connected, the graph is one component
    seen, stack = {0}, [0]
    while stack:
        for j in np.nonzero(a[stack.pop()])[0]:
            if j not in seen:
                seen.add(int(j))
                stack.append(int(j))
    assert len(seen) == 68
    # the stored triangulation is a Delaunay triangulation: no vertex inside any triangle's circumcircle
    t = canonical_template().astype(np.float64)
    t_open = t.copy()
    for up, lo in ((61, 67), (62, 66), (63, 65)):
        t_open[up, 1] -= 0.01
        t_open[lo, 1] += 0.01
    recomputed = edges_from_triangles(delaunay_triangles(t_open))
    overlap = len({tuple(e) for e in recomputed} & {tuple(e) for e in edges}) / len(edges)
    assert overlap > 0.9


def test_eye_distance_is_the_outer_eye_corner_distance_for_numpy_and_torch():
    import torch

    from emotalk.models.face_graph import eye_axis, eye_distance

    t = canonical_template().astype(np.float64)
    assert np.isclose(float(eye_distance(t)), 1.0, atol=1e-4)  # the template's unit
    # a face scaled by 3 and rotated by 90 degrees: distance 3, axis rotated
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])
    face = 3.0 * t @ rot.T
    batch = np.stack([t, face])
    assert np.allclose(eye_distance(batch), [1.0, 3.0], atol=1e-4)
    assert np.allclose(eye_axis(face), 3.0 * rot @ (t[45] - t[36]))
    d = eye_distance(torch.tensor(batch, dtype=torch.float32))
    assert isinstance(d, torch.Tensor) and torch.allclose(d, torch.tensor([1.0, 3.0]), atol=1e-4)
