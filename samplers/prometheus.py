"""``prometheus``: scrape a Prometheus text exposition endpoint and publish every sample.

Parsed with ``prometheus_client.parser`` (the maintained parser, escapes and all).
Each sample keeps its labels; its name is made subject-safe (characters outside
``[A-Za-z0-9_-]``, e.g. the ``:`` of recording rules, become ``_``) and prefixed
with ``prefix.`` when one is configured. With ``rates: true`` cumulative samples
(counters, and histogram/summary ``_bucket``/``_count``/``_sum``/``_total``) are
published as per-second rates named ``<name>.rate`` instead of their raw value;
the first scrape and a counter reset give no rate. NaN and infinite values
(legal in the exposition format, not on the bus) and label names the bus does not
allow are skipped and counted (``skipped``), so one odd sample cannot spoil a batch.
A series that vanishes from the exposition gets a staleness marker, and every
series does when the target goes down (``collect``), as in Prometheus.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from prometheus_client.parser import text_string_to_metric_families

from flarebus.errors import PluginError, SampleError, TargetDown
from flarebus.events import (
    LABEL_NAME_PATTERN,
    MetricSample,
    is_metric_name,
    series_key,
    stale_marker,
)
from flarebus.http import LazyClient, RequestFailed, RequestTimeout, check_headers, failure_reason
from flarebus.sampler import Sample, Sampler
from flarebus.samplers.system import Rates

_unsafe = re.compile(r"[^A-Za-z0-9_\-]")
_label_name = re.compile(LABEL_NAME_PATTERN)
_CUMULATIVE_SUFFIXES = ("_bucket", "_count", "_sum")
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"


def subject_safe(name: str) -> str:
    """A Prometheus metric name as a subject-safe flarebus metric name."""
    return _unsafe.sub("_", name) or "_"


def is_cumulative(family_type: str, sample_name: str) -> bool:
    if family_type == "counter":
        return True
    return family_type in ("histogram", "summary", "gaugehistogram") and \
        sample_name.endswith(_CUMULATIVE_SUFFIXES)


class PrometheusSampler(Sampler):
    name = "prometheus"
    default_interval = 15.0
    config_schema: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://"},
            "timeout": {"type": "number", "exclusiveMinimum": 0},
            "prefix": {"type": "string", "pattern": r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$"},
            "rates": {"type": "boolean"},
            "include": {"type": "string", "description": "regex: only metric names matching"},
            "exclude": {"type": "string", "description": "regex: drop metric names matching"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    options = (
        ("--url", "url", str, "exposition endpoint, e.g. http://127.0.0.1:9100/metrics"),
        ("--prefix", "prefix", str, "prepend PREFIX. to every metric name"),
        ("--rates", "rates", bool, "publish counters as per-second rates (<name>.rate)"),
        ("--include", "include", str, "only metrics whose name matches this regex"),
        ("--exclude", "exclude", str, "drop metrics whose name matches this regex"),
        ("--timeout", "timeout", float, "scrape timeout in seconds (default 10)"),
    )

    async def init(self, config: dict[str, Any]) -> None:
        await super().init(config)
        self.include = re.compile(self.config["include"]) if "include" in self.config else None
        self.exclude = re.compile(self.config["exclude"]) if "exclude" in self.config else None
        self.rates = Rates()
        self.skipped = 0
        self._series: dict[str, tuple[str, dict[str, str]]] = {}  # the last scrape's, by key
        self.http = LazyClient(self.config.get("timeout", 10.0), {"Accept": ACCEPT},
                               self.config.get("headers", {}), follow_redirects=True)

    def validate_config(self) -> None:
        super().validate_config()
        try:
            check_headers(self.config.get("headers", {}))
        except ValueError as exc:
            raise PluginError(self.name, f"config.{exc}", source="sampler config") from None

    async def close(self) -> None:
        await self.http.aclose()

    async def fetch(self) -> str:
        """The exposition text of one scrape."""
        url = self.config["url"]
        try:
            response = await self.http.get().get(url)
        except RequestTimeout:
            raise SampleError(f"{url}: cannot scrape: no answer within "
                              f"{self.http.timeout:g}s") from None
        except RequestFailed as exc:
            raise SampleError(f"{url}: cannot scrape: {failure_reason(exc, url)}") from None
        if not response.is_success:
            raise SampleError(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
        return response.text

    async def collect(self) -> Sequence[Sample]:
        """One scrape's samples, and a staleness marker for every series it no longer has.

        As Prometheus does: a series that vanished from the exposition ended at
        this scrape, and when the target does not answer (or not with metrics)
        every series it had ended (``TargetDown`` carries their markers).
        """
        now = time.time()
        try:
            samples, present = self.scrape(await self.fetch(), now)
        except SampleError as exc:
            raise TargetDown(exc.reason, exc.line, exc.source, markers=self._ended({})) from None
        return samples + self._ended(present)

    def _ended(self, present: dict[str, tuple[str, dict[str, str]]]) -> list[MetricSample]:
        """Markers of the series the previous scrape had and this one has not; remember these."""
        gone = [stale_marker(name, None, dict(labels))
                for key, (name, labels) in self._series.items() if key not in present]
        self._series = present
        return gone

    def parse(self, text: str, now: float) -> list[MetricSample]:
        """The samples of one scrape (``now`` is its time, for rates)."""
        return self.scrape(text, now)[0]

    def scrape(self, text: str, now: float
               ) -> tuple[list[MetricSample], dict[str, tuple[str, dict[str, str]]]]:
        """The samples of one scrape, and every series it has by key (published or not).

        A series is present when it is in the exposition and could be published:
        a NaN value or a rate not computable this time (first scrape, counter
        reset) is a gap, not the series' end, so neither sends a marker.
        """
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise SampleError(f"{self.config['url']}: not Prometheus text format: {exc}") from None
        prefix = self.config.get("prefix")
        as_rates = self.config.get("rates", False)
        out: list[MetricSample] = []
        present: dict[str, tuple[str, dict[str, str]]] = {}
        for family in families:
            for sample in family.samples:
                if self.include and not self.include.search(sample.name):
                    continue
                if self.exclude and self.exclude.search(sample.name):
                    continue
                value = float(sample.value)
                name = subject_safe(sample.name)
                if prefix:
                    name = f"{prefix}.{name}"
                cumulative = as_rates and is_cumulative(family.type, sample.name)
                published = f"{name}.rate" if cumulative else name
                if not is_metric_name(published) \
                        or not all(_label_name.match(k) for k in sample.labels):
                    self.skipped += 1
                    continue
                key = series_key(published, sample.labels)
                present[key] = (published, sample.labels)
                if cumulative:
                    rate = self.rates.rate(series_key(name, sample.labels), value, now)
                    if rate is None:
                        continue
                    value = rate
                if not math.isfinite(value):
                    self.skipped += 1
                    continue
                out.append(MetricSample(published, value, None, dict(sample.labels)))
        return out, present
