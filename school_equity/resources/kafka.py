"""Kafka connection settings as a Dagster resource. Secrets only through dg.EnvVar."""

from __future__ import annotations

import threading

import dagster as dg
from pydantic import Field

from school_equity.kafka.client import make_consumer

_cache: dict[tuple, object] = {}
_lock = threading.Lock()


class KafkaResource(dg.ConfigurableResource):
    """The survey topic and the consumer group that lands it (Tansu locally, MSK/Confluent in prod)."""

    bootstrap_servers: str
    topic: str
    consumer_group: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = Field(default=None, description="set with dg.EnvVar")
    sasl_password: str | None = Field(default=None, description="set with dg.EnvVar")

    def _security(self) -> dict:
        out: dict = {"security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            out.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_username,
                       sasl_plain_password=self.sasl_password)
        return out

    def consumer(self, *, with_group: bool = True, **overrides):
        """A fresh consumer (the caller closes it). With the group, commits are visible to
        standard Kafka lag tools; ranges are always assigned, never subscribed."""
        return make_consumer(self.bootstrap_servers, self.consumer_group if with_group else None,
                             **self._security(), **overrides)

    def cached_consumer(self, *, with_group: bool):
        """A long-lived consumer for sensor ticks: reconnecting every tick would cost more
        than the tick itself. Dropped by `forget_cached` when it errors."""
        key = (self.bootstrap_servers, self.consumer_group if with_group else None, self.security_protocol)
        with _lock:
            c = _cache.get(key)
            if c is None:
                c = self.consumer(with_group=with_group)
                _cache[key] = c
            return c

    def forget_cached(self) -> None:
        with _lock:
            for key in [k for k in _cache if k[0] == self.bootstrap_servers]:
                try:
                    _cache.pop(key).close(autocommit=False)
                except Exception:
                    pass
