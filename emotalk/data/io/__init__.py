"""File formats and media: ffmpeg audio/video, processed clips, checkpoints, bundled photos."""
