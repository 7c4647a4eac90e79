"""Similarity alignment, retargeting and their inverses; face crops."""
from __future__ import annotations

import numpy as np
import pytest

from emotalk.data.face.alignment import (STABLE_POINTS, CropPaster, align_to_template, apply_similarity,
                                         compose_similarity, crop_template, crop_transform, invert_similarity,
                                         paste_crop, retarget, retargeted_to_image, similarity_fit,
                                         similarity_params, to_image, unretarget, warp_image)
from emotalk.models.face_graph import MOUTH, BROWS, canonical_template


def random_similarity(rng, scale=(50, 300), shift=500):
    ang = rng.uniform(-0.5, 0.5)
    s = rng.uniform(*scale)
    t = rng.uniform(-shift, shift, 2)
    return np.array([[s * np.cos(ang), -s * np.sin(ang), t[0]], [s * np.sin(ang), s * np.cos(ang), t[1]]])


def subject_face(rng):
    """A subject-shaped neutral face: the template with a per-subject shape change."""
    tpl = canonical_template().astype(np.float64)
    return tpl * np.array([1.08, 0.93]) + rng.normal(0, 0.015, tpl.shape)


def test_similarity_fit_recovers_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(68, 2))
    m = random_similarity(rng)
    dst = apply_similarity(m, src)
    est = similarity_fit(src, dst)
    np.testing.assert_allclose(est, m, rtol=1e-9, atol=1e-6)
    s, ang, tx, ty = similarity_params(est)
    assert s == pytest.approx(np.hypot(m[0, 0], m[1, 0]))
    # batched
    ms = np.stack([random_similarity(rng) for _ in range(4)])
    dsts = np.stack([apply_similarity(mm, src) for mm in ms])
    np.testing.assert_allclose(similarity_fit(np.broadcast_to(src, dsts.shape), dsts), ms, atol=1e-6)
    # no reflection: fitting a mirrored point set does not flip
    mirrored = src * np.array([-1.0, 1.0])
    est = similarity_fit(src, mirrored)
    assert np.linalg.det(est[:, :2]) > 0


def test_invert_and_compose():
    rng = np.random.default_rng(2)
    a, b = random_similarity(rng), random_similarity(rng)
    pts = rng.normal(size=(10, 2)) * 100
    np.testing.assert_allclose(apply_similarity(invert_similarity(a), apply_similarity(a, pts)), pts, atol=1e-9)
    np.testing.assert_allclose(apply_similarity(compose_similarity(a, b), pts),
                               apply_similarity(a, apply_similarity(b, pts)), atol=1e-6)
    per_frame = np.stack([a, b])
    inv = invert_similarity(per_frame)
    seq = np.stack([pts, pts])
    np.testing.assert_allclose(apply_similarity(inv, apply_similarity(per_frame, seq)), seq, atol=1e-9)


def test_alignment_removes_pose_and_keeps_expression():
    rng = np.random.default_rng(3)
    neutral = subject_face(rng)
    m = random_similarity(rng)
    aligned, m_est = align_to_template(apply_similarity(m, neutral))
    # the same face in any pose aligns to the same canonical shape
    aligned2, _ = align_to_template(apply_similarity(random_similarity(rng), neutral))
    np.testing.assert_allclose(aligned, aligned2, atol=1e-4)
    # only stable points drive the fit: opening the mouth does not move the aligned eyes or nose
    talking = neutral.copy()
    talking[list(MOUTH[8:]), 1] += 0.2
    a_talk, _ = align_to_template(apply_similarity(m, talking))
    np.testing.assert_allclose(a_talk[list(STABLE_POINTS)], aligned[list(STABLE_POINTS)], atol=1e-4)
    assert (a_talk[list(MOUTH[8:]), 1] - aligned[list(MOUTH[8:]), 1]).mean() > 0.15


def test_align_retarget_inverse_roundtrip():
    """image landmarks -> align -> retarget -> unretarget -> inverse similarity == input."""
    rng = np.random.default_rng(4)
    tpl = canonical_template()
    neutral = subject_face(rng)
    T = 12
    motion = np.zeros((T, 68, 2))
    motion[:, list(MOUTH), 1] += np.linspace(0, 0.15, T)[:, None]  # mouth opens
    motion[:, list(BROWS), 1] -= np.linspace(0, 0.05, T)[:, None]  # brows rise
    frames_canon = neutral + motion
    poses = np.stack([random_similarity(rng) for _ in range(T)])
    image = apply_similarity(poses, frames_canon)  # (T, 68, 2) in pixels
    aligned, m = align_to_template(image)
    assert m.shape == (T, 2, 3)
    aligned_neutral, _ = align_to_template(apply_similarity(random_similarity(rng), neutral))
    retargeted = retarget(aligned, aligned_neutral)
    # the retargeted sequence is the template plus the expression motion (shape of the subject removed)
    np.testing.assert_allclose(retargeted[0], tpl, atol=2e-3)
    _, a = align_to_template(neutral)  # the subject's face-shape normalisation (motion is not in STABLE_POINTS)
    expected = (motion - motion[0]) @ a[:, :2].T
    np.testing.assert_allclose(retargeted - retargeted[0], expected, atol=2e-3)
    back = to_image(unretarget(retargeted, aligned_neutral), m)
    np.testing.assert_allclose(back, image, atol=1e-2)  # pixels (float32 canonical storage)
    np.testing.assert_allclose(retargeted_to_image(retargeted, aligned_neutral, m), image, atol=1e-2)
    # retargeting a subject's own neutral gives the template exactly
    np.testing.assert_allclose(retarget(aligned_neutral, aligned_neutral), tpl, atol=1e-6)


def test_crop_transform_places_face():
    rng = np.random.default_rng(5)
    tpl = canonical_template()
    m_img = random_similarity(rng, scale=(120, 200), shift=50) + np.array([[0, 0, 400], [0, 0, 300]])
    face = apply_similarity(m_img, tpl)
    m = crop_transform(face, crop_size=256)
    in_crop = apply_similarity(m, face)
    np.testing.assert_allclose(in_crop, crop_template(256), atol=1e-6)
    eye_r, eye_l = in_crop[36:42].mean(0), in_crop[42:48].mean(0)
    assert abs(eye_r[1] - eye_l[1]) < 1e-6  # upright
    assert 0 < in_crop[:, 0].min() and in_crop[:, 0].max() < 256 and in_crop[:, 1].max() < 256
    m128 = crop_transform(face, crop_size=128)
    np.testing.assert_allclose(apply_similarity(m128, face), in_crop / 2, atol=1e-6)


def test_warp_and_landmarks_agree_on_a_real_photo():
    """Landmarks mapped by the crop similarity match landmarks detected on the warped crop."""
    from emotalk.data.face.detect import DlibLandmarker
    from emotalk.data.io.photos import public_domain_photos

    det = DlibLandmarker()
    img = public_domain_photos()["grace_hopper"]
    face = det.largest_face(img)
    m = crop_transform(face.landmarks, crop_size=256)
    # rotate the crop by 10 degrees on top, to exercise the rotation path
    c, s = np.cos(0.17), np.sin(0.17)
    rot = np.array([[c, -s, 128 - 128 * c + 128 * s], [s, c, 128 - 128 * s - 128 * c]])
    m = compose_similarity(rot, m)
    crop = warp_image(img, m, 256)
    assert crop.shape == (256, 256, 3)
    mapped = apply_similarity(m, face.landmarks)
    found = det.largest_face(crop).landmarks
    assert np.median(np.linalg.norm(found - mapped, axis=1)) < 3.0  # pixels in a 256 crop
    # and pasting the crop back reproduces the photo around the face
    pasted = paste_crop(img, crop, m)
    l, t, r, b = [int(v) for v in face.box]
    diff = np.abs(pasted[t:b, l:r].astype(float) - img[t:b, l:r].astype(float)).mean()
    assert diff < 6.0


def test_face_geometry_for_inference():
    """A photo's geometry: predicted canonical motion lands on the photo's own face, in its crop."""
    from emotalk.data.face.alignment import face_geometry

    rng = np.random.default_rng(6)
    neutral = subject_face(rng)
    m_img = random_similarity(rng, scale=(100, 150), shift=20) + np.array([[0, 0, 300], [0, 0, 250]])
    photo_pts = apply_similarity(m_img, neutral)
    g = face_geometry(photo_pts, crop_size=256)
    tpl = canonical_template()
    # no motion -> the photo's own landmarks (in the image and in the crop)
    np.testing.assert_allclose(g.retargeted_to_image(tpl), photo_pts, atol=1e-2)
    np.testing.assert_allclose(g.retargeted_to_crop(tpl), g.crop_landmarks, atol=1e-2)
    # a mouth-opening motion in canonical space opens the photo's mouth downwards in the crop
    moved = tpl.copy()
    moved[list(MOUTH[8:]), 1] += 0.1
    crop_pts = g.retargeted_to_crop(moved)
    assert (crop_pts[list(MOUTH[8:]), 1] - g.crop_landmarks[list(MOUTH[8:]), 1]).min() > 0.1 * 0.3 * 256 * 0.8
    img = np.zeros((600, 600, 3), np.uint8)
    assert g.crop(img).shape == (256, 256, 3)


def test_mead_mini_similarity_is_the_same_fit():
    """mead-mini's Similarity uses the one Umeyama fit of alignment.py (no second implementation)."""
    from emotalk.mini.geometry import Similarity

    rng = np.random.default_rng(3)
    src = rng.normal(size=(30, 2))
    dst = src @ np.array([[0.8, -0.6], [0.6, 0.8]]).T * 2.5 + [1.0, -4.0] + rng.normal(scale=0.01, size=(30, 2))
    assert np.allclose(Similarity.fit(src, dst).m, similarity_fit(src, dst))
    assert np.isclose(Similarity.fit(src, dst).scale, 2.5, atol=0.01)


def test_crop_paster_equals_the_plain_blend():
    """CropPaster (mask warped once, the photo's share precomputed, written into a view) gives the pixels
    of the plain per-crop formula, including saturated images, an alpha mask and no feather."""
    import cv2

    rng = np.random.default_rng(0)
    S, h, w = 64, 150, 170
    m = np.array([[0.5, -0.1, -20.0], [0.1, 0.5, -30.0]])  # image -> crop, rotated and scaled down
    alpha = cv2.GaussianBlur((rng.random((S, S)) > 0.5).astype(np.float32), (0, 0), 2.0)
    for feather, a in ((8, None), (4, alpha), (0, alpha)):
        for img in (rng.integers(0, 256, (h, w, 3), dtype=np.uint8), np.full((h, w, 3), 255, np.uint8)):
            crops = [rng.integers(0, 256, (S, S, 3), dtype=np.uint8), np.full((S, S, 3), 255, np.uint8)]
            inv = invert_similarity(m)
            mask = np.zeros((S, S), np.float32)
            mask[feather:S - feather, feather:S - feather] = 1.0
            if feather:
                mask = cv2.GaussianBlur(mask, (0, 0), feather / 2.0)
            mask = warp_image(mask * (1 if a is None else a), inv, (w, h), border="constant")[..., None]
            paster = CropPaster(img.shape, S, m, feather, a, image=img)
            for crop in crops:
                back = warp_image(crop, inv, (w, h), border="constant").astype(np.float32)
                want = np.clip(img.astype(np.float32) * (1 - mask) + back * mask + 0.5, 0, 255).astype(np.uint8)
                assert np.array_equal(paster(crop), want)
                assert np.array_equal(paste_crop(img, crop, m, feather, a), want)
                frame = np.zeros((h + 10, w + 10, 3), np.uint8)
                paster(crop, out=frame[5:5 + h, 5:5 + w])  # straight into a frame, as the compositor does
                assert np.array_equal(frame[5:5 + h, 5:5 + w], want) and not frame[:5].any()
