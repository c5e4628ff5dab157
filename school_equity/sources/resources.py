"""Configuration of the public batch sources as a Dagster resource."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from school_equity.settings import Settings


class PublicSourcesResource(dg.ConfigurableResource):
    """Where the Bronze source assets find a vintage's file.

    Order: the run's ``source_uri`` config, then ``download_urls`` for that source and
    vintage, then the newest matching file in ``landing_dir``, then the sample shipped
    in the package. Setting a URL here is how production switches a vintage from the
    sample to the publisher's file without a code change.
    """

    landing_dir: str = Field(default="", description="folder watched by source_landing_sensor")
    download_urls: dict[str, str] = Field(
        default_factory=dict,
        description='"<source>/<vintage>" -> http(s) URL, e.g. "svi/2022" -> the CDC state CSV',
    )
    download_timeout_seconds: float = Field(default=120.0, description="per socket operation")
    landing_settle_seconds: float = Field(
        default=5.0, description="a landing file must be this old before the sensor takes it (still being copied)"
    )


def public_sources_resource(settings: Settings) -> PublicSourcesResource:
    """The resource for an environment's settings (landing folder from SCHOOL_EQUITY_LANDING)."""
    return PublicSourcesResource(landing_dir=settings.landing_dir)
