"""Renderers: landmarks of the photo's face crop -> face crops (paper Fig. 2, G_T; plus a classical warp).

A renderer is prepared once per photo (:func:`make_renderer`) and then called batch by batch with crop
landmarks ``(B, 68, 2)`` - and optionally per-frame emotion control vectors ``(B, E + I)``, so emotion
timelines and streaming can drive it frame by frame. It returns ``B`` face crops ``(S, S, 3)`` uint8.

Renderers are registered by name in :data:`RENDERERS` (:func:`register_renderer`):

``neural``  G_T (:class:`NeuralRenderer`): the photo crop's background replaced by the training backdrop
            (appendix "Background Replacement"; the colour comes from the texture checkpoint's metadata),
            one-shot fine-tuning of a copy of E_T/D_T on it (§4.1), E_T run once; every frame then costs
            one pass of the flow/decoder part, run by the inference-only G_T of
            :mod:`emotalk.inference.fast_texture` (BatchNorm folded, channels_last, bf16 where native,
            frames per pass chosen by measurement).
``warp``    a piecewise-affine warp of the photo crop with a drawn mouth interior
            (:mod:`emotalk.data.face.warp`): no G_T, a fast preview and an evaluation baseline.

:func:`make_renderer` returns a :class:`PreparedRenderer` that carries everything later stages need
(the person alpha for paste-back, the background colour used, the one-shot record), so nothing is
recomputed or read positionally.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import torch

from emotalk.data.datasets.texture import resize_crop, to_tensor_image
from emotalk.data.face.background import DEFAULT_BACKGROUND_RGB, person_mask, replace_background
from emotalk.data.face.warp import FaceWarper, render_frame
from emotalk.data.loading import LoadedModel
from emotalk.errors import CheckpointError, InputError
from emotalk.inference.fast_texture import FastTextureGenerator, default_tuner, render_batches
from emotalk.inference.one_shot import OneShotInfo, one_shot_finetune
from emotalk.inference.photo import Photo
from emotalk.models.face_graph import eye_distance

log = logging.getLogger(__name__)


class Renderer(Protocol):
    name: str

    def __call__(self, crop_landmarks: np.ndarray, emotion: np.ndarray | None = None) -> list[np.ndarray]:
        """Crop landmarks ``(B, 68, 2)`` (pixels of the S x S crop) -> B crops ``(S, S, 3)`` uint8."""


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if image.shape[0] == size and image.shape[1] == size:
        return image
    interp = cv2.INTER_AREA if size < image.shape[0] else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


class NeuralRenderer:
    """G_T on one photo: (background-replaced) identity crop, optional one-shot fine-tuning, E_T once.

    ``emotion``: G_T's control vector ``(E + I,)`` used when a call gives none. ``precision``: ``auto``
    (bf16 where the device runs it natively, else fp32), ``fp32`` or ``bf16``.
    ``batch_size`` is what the pipeline should hand over per call; inside a call the frames go through
    G_T in batches that :class:`~emotalk.inference.fast_texture.BatchTuner` measured to be fastest."""

    name = "neural"

    def __init__(self, generator, photo: Photo, emotion: np.ndarray, device: torch.device,
                 finetune_steps: int = 5, background_rgb=None, alpha: np.ndarray | None = None,
                 progress: bool = False, finetune_kwargs: dict | None = None, precision: str = "auto"):
        self.device = device
        self.S = photo.crop_size
        self.s = int(generator.cfg.image_size)
        identity = photo.crop if alpha is None else replace_background(photo.crop, alpha, background_rgb)
        self.identity_crop = identity
        img, lm = resize_crop(identity, photo.crop_landmarks, self.s)
        self.identity = to_tensor_image(img)[None].to(device)
        self.identity_landmarks = torch.from_numpy(np.asarray(lm, np.float32))[None].to(device)
        self.emotion = self._emotion_tensor(emotion)
        self.finetune_info: OneShotInfo | None = None
        if finetune_steps and finetune_steps > 0:
            # works on a copy: the pipeline's G_T stays untouched for the next photo
            generator, self.finetune_info = one_shot_finetune(
                generator, self.identity, self.identity_landmarks, int(finetune_steps), device=device,
                progress=progress, return_info=True, **(finetune_kwargs or {}))
        self.G = generator.eval()
        self.fast = FastTextureGenerator(self.G, precision=precision, device=device)
        self.fast_identity = self.fast.encode_identity(self.identity)
        self.tuner = default_tuner(self.fast)

    @property
    def batch_size(self) -> int:
        return self.tuner.default

    def _emotion_tensor(self, emotion: np.ndarray) -> torch.Tensor:
        e = np.asarray(emotion, np.float32)
        return torch.from_numpy(np.ascontiguousarray(e.reshape(-1, e.shape[-1]))).to(self.device)

    @torch.no_grad()
    def __call__(self, crop_landmarks: np.ndarray, emotion: np.ndarray | None = None) -> list[np.ndarray]:
        lm = (np.asarray(crop_landmarks, np.float32) + 0.5) * (self.s / self.S) - 0.5
        driven = torch.from_numpy(lm).to(self.device)
        emo = self.emotion if emotion is None else self._emotion_tensor(emotion)
        if emo.shape[0] not in (1, driven.shape[0]):
            raise InputError(f"{driven.shape[0]} frames but {emo.shape[0]} emotion vectors")
        out = render_batches(self.fast, self.fast_identity, self.identity_landmarks, driven, emo, self.tuner)
        # to uint8 on the device, then one copy to the host for the whole batch (not one per frame)
        frames = ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return [_resize(x, self.S) for x in frames]


class WarpRenderer:
    """Classical piecewise-affine warp of the photo crop to the landmarks, with a drawn mouth interior:
    no G_T, a fast preview and an evaluation baseline. It shows no emotion beyond the landmarks'."""

    name = "warp"
    batch_size = 16

    def __init__(self, photo: Photo):
        self.warper = FaceWarper(photo.crop, photo.crop_landmarks)
        lm = photo.crop_landmarks
        self.unit = float(eye_distance(lm))

    def __call__(self, crop_landmarks: np.ndarray, emotion: np.ndarray | None = None) -> list[np.ndarray]:
        return [render_frame(self.warper, lm, self.unit) for lm in np.asarray(crop_landmarks)]


@dataclass
class RenderRequest:
    """What a renderer factory may use to prepare itself for one photo."""

    photo: Photo
    device: torch.device
    texture: LoadedModel | None = None  # G_T, when loaded
    emotion: np.ndarray | None = None  # G_T's control vector (E + I,), computed once by the caller
    finetune_steps: int = 5
    background: bool = True  # replace the photo's background by the training backdrop before G_T
    progress: bool = False
    precision: str = "auto"  # G_T's arithmetic: auto (bf16 where native), fp32 or bf16


@dataclass
class PreparedRenderer:
    """A renderer ready for one photo, with what paste-back and the result record need."""

    renderer: Renderer
    alpha: np.ndarray | None = None  # (S, S) person mask of the photo crop (None: no background replacement)
    background_rgb: tuple[int, int, int] | None = None  # the training backdrop fed to G_T
    finetune: OneShotInfo | None = None  # the one-shot fine-tuning record (neural renderer)

    @property
    def name(self) -> str:
        return self.renderer.name

    @property
    def batch_size(self) -> int:
        return int(self.renderer.batch_size)


RendererFactory = Callable[[RenderRequest], PreparedRenderer]
#: name -> factory; the CLI's ``--renderer`` choices and ``GenerateOptions.renderer`` come from here.
RENDERERS: dict[str, RendererFactory] = {}


def register_renderer(name: str) -> Callable[[RendererFactory], RendererFactory]:
    def deco(factory: RendererFactory) -> RendererFactory:
        RENDERERS[name] = factory
        return factory

    return deco


def needs_texture(name: str) -> bool:
    """Whether renderer ``name`` needs a texture (G_T) checkpoint."""
    return name == "neural"


def training_background(texture: LoadedModel) -> tuple[int, int, int]:
    """The backdrop G_T was trained on, from its checkpoint's metadata only (never the training data)."""
    rgb = texture.meta.background_rgb
    if rgb is None:
        log.warning("the texture checkpoint %s records no background_rgb; using the default backdrop %s",
                    texture.meta.path, DEFAULT_BACKGROUND_RGB)
        return DEFAULT_BACKGROUND_RGB
    return tuple(int(v) for v in rgb)  # type: ignore[return-value]


@register_renderer("neural")
def _neural(req: RenderRequest) -> PreparedRenderer:
    if req.texture is None:
        raise CheckpointError("the neural renderer needs a texture (G_T) checkpoint; load one or use "
                              "renderer='warp'")
    if req.emotion is None:
        raise InputError("the neural renderer needs G_T's emotion control vector")
    alpha = rgb = None
    if req.background:
        alpha = person_mask(req.photo.crop, req.photo.crop_landmarks)
        rgb = training_background(req.texture)
    # the fine-tuning bar only on a terminal (a few steps; in logs it would be noise)
    bar = req.progress and bool(getattr(sys.stderr, "isatty", lambda: False)())
    r = NeuralRenderer(req.texture.module, req.photo, req.emotion, req.device, req.finetune_steps, rgb, alpha, bar,
                       precision=req.precision)
    return PreparedRenderer(r, alpha, rgb, r.finetune_info)


@register_renderer("warp")
def _warp(req: RenderRequest) -> PreparedRenderer:
    return PreparedRenderer(WarpRenderer(req.photo))


def make_renderer(name: str, request: RenderRequest) -> PreparedRenderer:
    """Prepare renderer ``name`` for ``request.photo`` (InputError for an unknown name)."""
    factory = RENDERERS.get(name)
    if factory is None:
        raise InputError(f"unknown renderer {name!r}; choose one of: {', '.join(RENDERERS)}")
    return factory(request)
