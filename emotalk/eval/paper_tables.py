"""The paper's own numbers (Tables 2–5), shown beside ours in the evaluation tables.

Column keys are the display names of the same metrics in :mod:`emotalk.eval.metrics` (the paper's
"Sync_conf" is SyncNet's confidence, LSE-C). Offline stand-ins (FID-dlib, CSIM-dlib, AV-sync-conf) have
no paper value: they are different metrics (as is Emo-Acc-FER) and are never shown as if they were the
paper's.
"""
from __future__ import annotations

TABLE2_COLUMNS = ("PSNR", "SSIM", "CPBD", "FID", "M-LD", "M-LVD", "F-LD", "F-LVD", "Emo-Acc", "CSIM",
                  "LSE-C")

#: Table 2: quantitative comparison (dataset -> method -> values in TABLE2_COLUMNS order).
TABLE2: dict[str, dict[str, tuple[float, ...]]] = {
    "MEAD": {
        "MEAD [Wang et al., 2020]": (28.61, 0.68, 0.29, 22.52, 2.52, 2.28, 3.16, 2.01, 76.00, 0.86, 1.83),
        "EVP [Ji et al., 2021]": (29.53, 0.71, 0.35, 7.99, 2.45, 1.78, 3.01, 1.56, 83.58, 0.67, 1.21),
        "Ours (paper)": (30.06, 0.77, 0.37, 35.41, 2.18, 0.77, 1.24, 0.50, 85.48, 0.79, 3.05),
    },
    "CREMA-D": {
        "[Vougioukas et al., 2019]": (23.57, 0.70, 0.22, 71.12, 2.90, 0.42, 2.80, 0.34, 55.26, 0.51, 1.12),
        "[Eskimez et al., 2020]": (30.91, 0.85, 0.39, 218.59, 6.14, 0.49, 5.89, 0.40, 65.67, 0.75, 4.38),
        "Ours (paper)": (31.07, 0.90, 0.46, 68.45, 2.41, 0.69, 1.35, 0.46, 75.02, 0.75, 3.53),
    },
}

TABLE3_COLUMNS = ("M-LD", "M-LVD", "F-LD", "F-LVD")
#: Table 3: ablation study for landmark generation (MEAD).
TABLE3: dict[str, tuple[float, ...]] = {
    "w/o graph encoder": (5.54, 0.54, 2.75, 0.43),
    "w/o skip connections": (5.54, 0.54, 2.75, 0.43),
    "w/o edge weights": (2.45, 0.83, 1.39, 0.52),
    "w/o L_gan": (2.52, 0.86, 1.42, 0.53),
    "full": (2.18, 0.77, 1.24, 0.50),
}

TABLE4_COLUMNS = ("PSNR", "CSIM", "Emo-Acc")
#: Table 4: ablation study for texture generation (MEAD).
TABLE4: dict[str, tuple[float, ...]] = {
    "w/o emotion feature": (29.83, 0.885, 45.00),
    "w/o emotional landmark": (29.85, 0.861, 59.61),
    "w/o one-shot learning": (29.89, 0.767, 84.00),
    "full": (30.06, 0.789, 85.48),
}

TABLE5_COLUMNS = ("PSNR", "SSIM", "CPBD", "FID", "M-LD", "M-LVD", "F-LD", "F-LVD", "CSIM", "LSE-C")
#: Table 5: neutral emotion of MEAD.
TABLE5: dict[str, tuple[float, ...]] = {
    "MakeItTalk": (24.89, 0.77, 0.219, 158.76, 7.65, 0.59, 5.44, 0.46, 0.57, 3.22),
    "Wav2Lip": (25.37, 0.79, 0.282, 127.22, 6.74, 0.39, 4.91, 0.26, 0.84, 6.28),
    "Ours (paper)": (28.78, 0.80, 0.385, 30.41, 1.53, 0.49, 0.97, 0.34, 0.91, 3.27),
}


def paper_row(table: str, key: str, dataset: str = "MEAD") -> dict[str, float]:
    """The paper's values of one row as ``{column: value}``."""
    if table == "table2":
        return dict(zip(TABLE2_COLUMNS, TABLE2[dataset][key]))
    cols, rows = {"table3": (TABLE3_COLUMNS, TABLE3), "table4": (TABLE4_COLUMNS, TABLE4),
                  "table5": (TABLE5_COLUMNS, TABLE5)}[table]
    return dict(zip(cols, rows[key]))
