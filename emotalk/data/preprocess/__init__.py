"""Raw datasets (MEAD, CREMA-D, RAVDESS, mead-mini) -> processed clips."""
