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
========================  ================  =========================================  ====================
"""
from emotalk.eval.metrics.base import (MetricOptions, MetricResult, MetricSpec, VideoSample, compute_metric,
                                       compute_metrics, get_metric, list_metrics, register_metric)

__all__ = ["MetricOptions", "MetricResult", "MetricSpec", "VideoSample", "compute_metric", "compute_metrics",
           "get_metric", "list_metrics", "register_metric"]
