"""Dagster resources, chosen per environment in `resources_for_env`."""

from __future__ import annotations

import dagster as dg

from school_equity.lake import Lake


class LakeResource(dg.ConfigurableResource):
    """The lake root: a local directory (local) or an s3:// prefix (branch/prod)."""

    root: str

    def get_lake(self) -> Lake:
        return Lake(self.root)
