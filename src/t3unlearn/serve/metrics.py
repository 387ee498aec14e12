"""Prometheus metrics (``GET /metrics``, text exposition by ``prometheus_client``).

Each app has its own :class:`~prometheus_client.CollectorRegistry` (several apps in one process, as in
the tests, do not collide). Labels are bounded: ``model`` is a served model's name (or ``-`` for a
request that named none that exists), ``route`` a route template, never a raw path.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_ROUTES = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/v1/heads", "/health", "/metrics", "/")
_PREFIXES = ("/v1/models/", "/v1/heads/", "/static/")


def route_of(path: str) -> str:
    """The route template of ``path`` (``/v1/heads/x`` -> ``/v1/heads/{name}``); ``other`` for unknown paths."""
    if path in _ROUTES:
        return path
    for prefix, name in zip(_PREFIXES, ("/v1/models/{id}", "/v1/heads/{name}", "/static/{name}")):
        if path.startswith(prefix):
            return name
    return "other"


class Metrics:
    """The server's metrics; ``engine`` feeds the queue gauges when scraped."""

    def __init__(self, engine):
        r = self.registry = CollectorRegistry()
        self.requests = Counter("t3unlearn_requests", "HTTP requests answered, by route, model and status code",
                                ["route", "model", "status"], registry=r)
        self.prompt_tokens = Counter("t3unlearn_prompt_tokens", "prompt tokens of requests admitted to the engine",
                                     ["model"], registry=r)
        self.generation_tokens = Counter("t3unlearn_generation_tokens", "tokens generated (the end-of-sequence token included)",
                                         ["model"], registry=r)
        self.ttft = Histogram("t3unlearn_time_to_first_token_seconds", "from the request's arrival to its first generated token",
                              ["model"], buckets=_LATENCY, registry=r)
        self.latency = Histogram("t3unlearn_request_duration_seconds", "from the request's arrival to its last byte sent",
                                 ["route", "model"], buckets=_LATENCY, registry=r)
        self.failures = Counter("t3unlearn_sequence_failures", "sequences that failed alone (error_code)", ["code"], registry=r)
        self.in_flight = Gauge("t3unlearn_requests_in_flight", "HTTP requests being answered", registry=r)
        Gauge("t3unlearn_queue_length", "sequences waiting to join the running batch", registry=r).set_function(
            lambda: engine.stats()["waiting"])
        Gauge("t3unlearn_running_sequences", "sequences in the running batch", registry=r).set_function(
            lambda: engine.stats()["running"])

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
