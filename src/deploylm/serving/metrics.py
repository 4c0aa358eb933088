"""Prometheus metrics of one server: one registry per server (not the process-wide default), so tests
and benchmarks can run several servers in one process. Decoders report through a DecoderObserver, called on
their engine thread per token and per step."""

from __future__ import annotations

_TTFT_BUCKETS = (.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2.5, 5, 10, 20, 40, 80)
_ITL_BUCKETS = (.001, .0025, .005, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .5, 1, 2.5)


class ServerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("deploylm_requests", "Requests answered, by model, protocol and status code.",
                                ["model", "version", "protocol", "status"], registry=self.registry)
        self.latency = Histogram("deploylm_request_latency_seconds", "End-to-end request latency in the server.",
                                 ["model", "version", "protocol"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .0075, .01, .025, .05, .075, .1, .25, .5, 1, 2.5, 5, 10))
        self.batch_size = Histogram("deploylm_batch_size", "Inputs per runner call.", ["model", "version"], registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256))
        self.queue_depth = Gauge("deploylm_queue_depth", "Requests waiting for the runner.", ["model", "version"],
                                 registry=self.registry)
        self.dropped = Counter("deploylm_requests_dropped", "Requests dropped before compute (client gone or "
                               "deadline passed).", ["model", "version", "reason"], registry=self.registry)
        self._add_decoder_metrics(Counter, Gauge, Histogram)
        self._observers: list[DecoderObserver] = []

    def _add_decoder_metrics(self, Counter, Gauge, Histogram) -> None:  # noqa: N803 - prometheus classes
        labels, reg = ["model", "version"], self.registry
        self.ttft = Histogram("deploylm_time_to_first_token_seconds", "From a decoder request's arrival to its "
                              "first token (per choice).", labels, registry=reg, buckets=_TTFT_BUCKETS)
        self.itl = Histogram("deploylm_inter_token_latency_seconds", "Between consecutive tokens of one choice.",
                             labels, registry=reg, buckets=_ITL_BUCKETS)
        self.prompt_tokens = Counter("deploylm_prompt_tokens", "Prompt tokens of submitted decoder requests.",
                                     labels, registry=reg)
        self.generation_tokens = Counter("deploylm_generation_tokens", "Tokens generated (every choice).", labels,
                                         registry=reg)
        self.running = Gauge("deploylm_running_requests", "Decoder sequences in the running batch (a request with "
                             "n choices counts n).", labels, registry=reg)
        self.waiting = Gauge("deploylm_waiting_requests", "Decoder sequences waiting to be admitted.", labels,
                             registry=reg)
        self.kv_usage = Gauge("deploylm_kv_cache_usage_ratio", "Share of the KV cache budget in use (sequences "
                              "and prefix cache).", labels, registry=reg)
        self.kv_used = Gauge("deploylm_kv_cache_used_tokens", "KV cache tokens in use.", labels, registry=reg)
        self.prefix_hit_rate = Gauge("deploylm_prefix_cache_hit_rate", "Share of looked-up prompts whose prefix "
                                     "was found in the prefix cache.", labels, registry=reg)

    def decoder_observer(self, name: str, version: str) -> "DecoderObserver":
        observer = DecoderObserver(self, name, version)
        self._observers = [*self._observers, observer]  # copy-on-write: render() iterates it on the event loop
        return observer

    def observe_request(self, model: str, version: str, protocol: str, status: int, seconds: float) -> None:
        self.requests.labels(model, version, protocol, str(status)).inc()
        if status < 400:
            self.latency.labels(model, version, protocol).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        for observer in self._observers:  # an idle engine runs no step that would update its gauges
            observer.refresh()
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class DecoderObserver:
    """One decoder's metrics, its label children bound once (on_token runs per token on the engine thread)."""

    def __init__(self, metrics: ServerMetrics, name: str, version: str):
        m = metrics
        self.ttft, self.itl = m.ttft.labels(name, version), m.itl.labels(name, version)
        self.prompt_tokens = m.prompt_tokens.labels(name, version)
        self.generation_tokens = m.generation_tokens.labels(name, version)
        self.running, self.waiting = m.running.labels(name, version), m.waiting.labels(name, version)
        self.kv_usage, self.kv_used = m.kv_usage.labels(name, version), m.kv_used.labels(name, version)
        self.prefix_hit_rate = m.prefix_hit_rate.labels(name, version)
        self._engine = None

    def on_submit(self, engine, request) -> None:
        """A request was queued: its prompt counts once, whatever its n."""
        self._engine = engine
        self.prompt_tokens.inc(len(request.prompt_ids))

    def on_token(self, engine, request, first_at: float | None, last_at: float | None, now: float) -> None:
        self.generation_tokens.inc()
        if first_at is None:
            self.ttft.observe(now - request.arrival)
        else:
            self.itl.observe(now - last_at)

    def on_step(self, engine, n_chunks: int, n_tokens: int) -> None:
        self._engine = engine
        self._set(engine.stats())

    def refresh(self) -> None:
        if self._engine is None:
            return
        try:
            stats = self._engine.stats()
        except RuntimeError:  # its engine thread changed the prefix cache mid-read: the next scrape has it
            return
        self._set(stats)

    def _set(self, stats: dict) -> None:
        self.running.set(stats["running"])
        self.waiting.set(stats["waiting"])
        self.kv_used.set(stats["kv_used_tokens"])
        self.kv_usage.set(stats["kv_used_tokens"] / stats["kv_total_tokens"] if stats["kv_total_tokens"] else 0.0)
        self.prefix_hit_rate.set(stats["prefix_cache_hit_rate"])
