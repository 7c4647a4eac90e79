"""Speech features: phonemes (pocketsphinx), mel, DeepSpeech; per-frame windows shared by training and inference."""
