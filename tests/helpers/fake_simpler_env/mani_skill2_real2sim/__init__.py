"""A stand-in for ManiSkill2_real2sim's ASSET_DIR (its data folder): the fake's."""

from simpler_env import DATA as ASSET_DIR  # noqa: F401
