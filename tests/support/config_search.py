"""A search config the config and duration tests share. No tests here."""

from __future__ import annotations

import yaml

from pipelines.config import config_path

TPE = yaml.safe_load(config_path("tpe").read_text())
