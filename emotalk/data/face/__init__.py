"""Faces in images: dlib detection, tracking, similarity alignment and retargeting, person masks."""
