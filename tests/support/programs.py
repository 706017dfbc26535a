"""A free-form (command) trainer program that the unchanged-programs and unchanged-sweeps tests share.
No tests here.
"""

from __future__ import annotations

FREEFORM = {
    "val_loss": r"\|\s+epoch\s+(?P<step>\d+)\s+\|.*valid loss\s+([\d.]+)",
    "train_loss": r"\|\s+epoch\s+(?P<step>\d+)\s+\|\s+train loss\s+([\d.]+)",
    "test_loss": r"end of training \| test loss\s+([\d.]+)",
    "evaluated_hidden": r"end of training .*\| hidden\s+(\d+)",
}
