//! Per-request outcomes, their aggregation (HDR histograms) and the report.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Why a request failed; `kind` groups the report, `detail` is the first example kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: Cow<'static, str>,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: impl Into<Cow<'static, str>>, detail: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            detail: detail.into(),
        }
    }

    pub fn timeout(after: Duration) -> Self {
        Self::new("timeout", format!("no complete answer within {after:?}"))
    }

    pub fn http(status: u16, body: &str) -> Self {
        let body: String = body.chars().take(300).collect();
        Self::new(format!("http {status}"), body)
    }

    /// A reqwest error before the response: connection refused/reset, or another send error.
    pub fn send(error: &reqwest::Error) -> Self {
        let kind = if error.is_connect() {
            "connect"
        } else if error.is_timeout() {
            "timeout"
        } else {
            "send"
        };
        Self::new(kind, error_chain(error))
    }

    pub fn read(error: &dyn std::error::Error) -> Self {
        Self::new("read", error_chain(error))
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What one request did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub result: Result<(), Failure>,
    /// From sending the request to the first complete event.
    pub first_event: Option<Duration>,
    /// From sending the request to the end of the stream (or the failure).
    pub duration: Duration,
    pub events: u64,
    pub tokens: u64,
}

/// Counts and latency histograms (microseconds) over many outcomes.
pub struct Stats {
    pub requests: u64,
    pub successes: u64,
    pub events: u64,
    pub tokens: u64,
    first_event: Histogram<u64>,
    duration: Histogram<u64>,
    errors: BTreeMap<String, ErrorCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorCount {
    pub count: u64,
    pub example: String,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits (~0.1 %), grows past that if it must.
    let mut histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    histogram.auto(true);
    histogram
}

fn micros(duration: Duration) -> u64 {
    (duration.as_micros() as u64).max(1)
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: 0,
            successes: 0,
            events: 0,
            tokens: 0,
            first_event: histogram(),
            duration: histogram(),
            errors: BTreeMap::new(),
        }
    }
}

impl Stats {
    /// Latencies are recorded for successful requests only; events and tokens for all.
    pub fn record(&mut self, outcome: &Outcome) {
        self.requests += 1;
        self.events += outcome.events;
        self.tokens += outcome.tokens;
        match &outcome.result {
            Ok(()) => {
                self.successes += 1;
                if let Some(first) = outcome.first_event {
                    let _ = self.first_event.record(micros(first));
                }
                let _ = self.duration.record(micros(outcome.duration));
            }
            Err(failure) => self.record_failure(failure),
        }
    }

    pub fn record_failure(&mut self, failure: &Failure) {
        match self.errors.get_mut(failure.kind.as_ref()) {
            Some(entry) => entry.count += 1,
            None => {
                self.errors.insert(
                    failure.kind.to_string(),
                    ErrorCount {
                        count: 1,
                        example: failure.detail.clone(),
                    },
                );
            }
        }
    }

    pub fn record_first_event(&mut self, first: Duration) {
        let _ = self.first_event.record(micros(first));
    }

    pub fn errors(&self) -> &BTreeMap<String, ErrorCount> {
        &self.errors
    }

    pub fn first_event_percentiles(&self) -> Percentiles {
        Percentiles::of(&self.first_event)
    }

    pub fn report(&self, wall: Duration) -> Report {
        let wall_s = wall.as_secs_f64();
        let per_second = |count: u64| {
            if wall_s > 0.0 {
                count as f64 / wall_s
            } else {
                0.0
            }
        };
        Report {
            requests: self.requests,
            successes: self.successes,
            success_rate: if self.requests > 0 {
                self.successes as f64 / self.requests as f64
            } else {
                0.0
            },
            wall_s,
            requests_per_s: per_second(self.requests),
            events: self.events,
            events_per_s: per_second(self.events),
            tokens: self.tokens,
            tokens_per_s: per_second(self.tokens),
            first_event_ms: Percentiles::of(&self.first_event),
            duration_ms: Percentiles::of(&self.duration),
            errors: self.errors.clone(),
        }
    }
}

/// Milliseconds; all zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self {
                p50: 0.0,
                p95: 0.0,
                p99: 0.0,
                max: 0.0,
                mean: 0.0,
            };
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: u64,
    pub successes: u64,
    pub success_rate: f64,
    pub wall_s: f64,
    pub requests_per_s: f64,
    pub events: u64,
    pub events_per_s: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    /// Of successful requests.
    pub first_event_ms: Percentiles,
    /// Of successful requests.
    pub duration_ms: Percentiles,
    pub errors: BTreeMap<String, ErrorCount>,
}

impl Report {
    /// The human-readable table.
    pub fn write_table(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "requests        {:>10}   successes {} ({:.2} %)",
            self.requests,
            self.successes,
            self.success_rate * 100.0
        )?;
        writeln!(
            out,
            "wall time       {:>10.3} s   {:.1} requests/s",
            self.wall_s, self.requests_per_s
        )?;
        writeln!(
            out,
            "events          {:>10}   {:.1} events/s",
            self.events, self.events_per_s
        )?;
        writeln!(
            out,
            "text tokens     {:>10}   {:.1} tokens/s",
            self.tokens, self.tokens_per_s
        )?;
        writeln!(
            out,
            "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "p50", "p95", "p99", "max", "mean"
        )?;
        for (name, p) in [
            ("  first event", &self.first_event_ms),
            ("  whole stream", &self.duration_ms),
        ] {
            writeln!(
                out,
                "{:<22}{:>10.2}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                name, p.p50, p.p95, p.p99, p.max, p.mean
            )?;
        }
        if self.errors.is_empty() {
            writeln!(out, "errors          none")?;
        } else {
            writeln!(out, "errors")?;
            for (kind, count) in &self.errors {
                writeln!(
                    out,
                    "  {kind:<20}{:>8}   e.g. {}",
                    count.count, count.example
                )?;
            }
        }
        Ok(())
    }
}

/// Median of a few values (cold-start runs); the mean of the middle two for an even count.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(first_ms: u64, total_ms: u64, events: u64, tokens: u64) -> Outcome {
        Outcome {
            result: Ok(()),
            first_event: Some(Duration::from_millis(first_ms)),
            duration: Duration::from_millis(total_ms),
            events,
            tokens,
        }
    }

    #[test]
    fn report_math() {
        let mut a = Stats::default();
        for i in 1..=100 {
            a.record(&ok(i, 10 * i, 22, 20));
        }
        let b = &mut a;
        b.record(&Outcome {
            result: Err(Failure::new("http 503", "no key")),
            first_event: None,
            duration: Duration::from_millis(1),
            events: 0,
            tokens: 0,
        });
        b.record(&Outcome {
            result: Err(Failure::new("no stream_end", "cut")),
            first_event: Some(Duration::from_millis(5)),
            duration: Duration::from_millis(9000),
            events: 3,
            tokens: 2,
        });
        a.record_failure(&Failure::new("http 503", "other"));
        a.requests += 1;
        let report = a.report(Duration::from_secs(2));
        assert_eq!(report.requests, 103);
        assert_eq!(report.successes, 100);
        assert!((report.success_rate - 100.0 / 103.0).abs() < 1e-9);
        assert_eq!(report.events, 100 * 22 + 3);
        assert!((report.events_per_s - 2203.0 / 2.0).abs() < 1e-9);
        assert!((report.tokens_per_s - 2002.0 / 2.0).abs() < 1e-9);
        assert!((report.requests_per_s - 51.5).abs() < 1e-9);
        // Failed requests do not enter the latency histograms.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002;
        assert!(close(report.first_event_ms.p50, 50.0), "{report:?}");
        assert!(close(report.first_event_ms.p95, 95.0));
        assert!(close(report.first_event_ms.p99, 99.0));
        assert!(close(report.first_event_ms.max, 100.0));
        assert!(close(report.duration_ms.p50, 500.0));
        assert!(close(report.duration_ms.max, 1000.0));
        assert_eq!(report.errors["http 503"].count, 2);
        assert_eq!(report.errors["http 503"].example, "no key");
        assert_eq!(report.errors["no stream_end"].count, 1);
        let mut table = Vec::new();
        report.write_table(&mut table).unwrap();
        let table = String::from_utf8(table).unwrap();
        assert!(table.contains("http 503"), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["errors"]["http 503"]["count"], 2);
        assert!(json["first_event_ms"]["p99"].is_f64());
    }

    #[test]
    fn empty_report_is_zero() {
        let report = Stats::default().report(Duration::ZERO);
        assert_eq!(report.success_rate, 0.0);
        assert_eq!(report.events_per_s, 0.0);
        assert_eq!(report.first_event_ms.p50, 0.0);
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
