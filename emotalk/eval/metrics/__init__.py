"""Evaluation metrics of the paper (§4.2, Tables 2-5) in one registry, selectable by name.

    from emotalk.eval.metrics import MetricOptions, VideoSample, compute_metrics, list_metrics
    samples = [VideoSample(generated=gen, ground_truth=gt, identity=photo, audio=wav, sample_rate=16000,
                           fps=30, emotion="happy", name="M003/happy_001")]
    results = compute_metrics(["psnr", "ssim", "m_ld", "csim_dlib", "av_sync_conf"], samples, MetricOptions())
    results["PSNR"].value

Every metric is ``fn(samples: Sequence[VideoSample], opts: MetricOptions) -> MetricResult`` (see
:mod:`emotalk.eval.metrics.base` for the input and registry API). Registered names -> reported names:

========================  ================  =========================================  ====================
name                      reported as       needs                                      third-party weights
========================  ================  =========================================  ====================
psnr, ssim                PSNR, SSIM        generated, ground_truth                    --
cpbd                      CPBD              generated                                  --
fid                       FID               generated, ground_truth                    inception_weights
fid_dlib                  FID-dlib          generated, ground_truth                    -- (dlib, bundled)
m_ld, m_lvd, f_ld, f_lvd  M-LD ... F-LVD    generated, ground_truth                    -- (dlib, bundled)
csim                      CSIM              generated, identity                        arcface_weights
csim_dlib                 CSIM-dlib         generated, identity                        -- (dlib, bundled)
lse_c, lse_d              LSE-C, LSE-D      generated, audio                           syncnet_weights
av_sync_conf              AV-sync-conf      generated, audio                           --
av_sync_offset            AV-sync-offset    generated, audio                           --
emo_acc                   Emo-Acc           generated, emotion                         emotion_classifier
emo_acc_fer               Emo-Acc-FER       generated, emotion                         -- (fer package)
emo_acc_lm                Emo-Acc-LM        generated, identity, emotion               landmark_emotion_classifier
expr_transfer_brows|...   ExT-brows ...     the emotion grid (see below)               -- (dlib, bundled)
emotion_separation        Sep               the emotion grid                           -- (dlib, bundled)
intensity_monotonic       Int-mono          the emotion grid                           -- (dlib, bundled)
blink_visibility          Blink-ap          the emotion grid's blink rendering         -- (dlib, bundled)
blink_pixels              Blink-px          the emotion grid's blink rendering         --
mouth_psnr                Mouth-PSNR        generated, ground_truth                    -- (dlib, bundled)
========================  ================  =========================================  ====================

Metrics registered with ``on="grid"`` read the *emotion grid* instead of the test clips: one photo and one
speech clip rendered by the method in every emotion and intensity, with the neutral rendering and the
driving landmarks of each (:mod:`emotalk.eval.emotion_grid`, :mod:`emotalk.eval.metrics.expression`).

Modules: :mod:`.image_quality` (PSNR, SSIM, CPBD), :mod:`.fid`, :mod:`.landmark_distance`, :mod:`.identity`,
:mod:`.lse` (SyncNet), :mod:`.av_sync` (offline sync), :mod:`.emotion` (pixel classifiers),
:mod:`.emotion_lm` (landmark classifier), :mod:`.expression` (expression transfer, separation, blinks). Importing this package imports them
all, which registers their metrics. Shared measurements live one level up: :mod:`emotalk.eval.face_features`
(dlib landmarks, embeddings), :mod:`emotalk.eval.audio`, :mod:`emotalk.eval.detectors` (the cached networks).
"""
from emotalk.eval.metrics import (av_sync, emotion, expression, fid, identity,  # noqa: F401 - registration
                                  image_quality, landmark_distance, lse)
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, MetricSpec, VideoSample, compute_metric,
                                       compute_metrics, get_metric, list_metrics, register_metric)

__all__ = ["MetricOptions", "MetricResult", "MetricSpec", "VideoSample", "compute_metric", "compute_metrics",
           "get_metric", "list_metrics", "register_metric"]
