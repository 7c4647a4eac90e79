"""What the trainers read: G_L and G_T datasets, subject splits, augmentation, a toy dataset for tests."""
