//! Search latency of the embedded index: 10,000 conversation messages indexed (as the
//! conversation search and knowledge bases store them), then 1,000 searches, text only and text
//! plus a 64-number vector; p50, p95 and p99 per search, the time to index them all, and then
//! 500 single-message upserts into that index (what each run's indexing does).
//! `cargo bench -p sage-bench --bench search`.

use std::time::{Duration, Instant};

use sage_core::search::{Collection, EmbeddedIndex, SearchDocument, SearchIndex, SearchQuery};

const MESSAGES: usize = 10_000;
const SEARCHES: usize = 1_000;
const UPSERTS: usize = 500;
const DIMENSIONS: usize = 64;

/// A deterministic stream of numbers (xorshift), so every run indexes the same text.
struct Numbers(u64);

impl Numbers {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn vector(numbers: &mut Numbers) -> Vec<f32> {
    (0..DIMENSIONS)
        .map(|_| (numbers.next() % 1000) as f32 / 1000.0 - 0.5)
        .collect()
}

fn percentile(sorted: &[Duration], at: f64) -> Duration {
    sorted[((sorted.len() as f64 * at) as usize).min(sorted.len() - 1)]
}

fn report(label: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{label:<28} p50 {:>8.3} ms   p95 {:>8.3} ms   p99 {:>8.3} ms",
        percentile(&times, 0.50).as_secs_f64() * 1000.0,
        percentile(&times, 0.95).as_secs_f64() * 1000.0,
        percentile(&times, 0.99).as_secs_f64() * 1000.0,
    );
}

fn main() {
    let words = sage_bench::vocabulary();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let index = EmbeddedIndex::open(dir.path().join("index.json"));
    let mut numbers = Numbers(0x9e37_79b9_7f4a_7c15);
    let documents: Vec<SearchDocument> = (0..MESSAGES)
        .map(|at| {
            let text: Vec<&str> = (0..40)
                .map(|_| words[(numbers.next() % words.len() as u64) as usize])
                .collect();
            SearchDocument {
                id: format!("m{at}"),
                owner: "bench".into(),
                collection: Collection::Conversations,
                scope: String::new(),
                parent: format!("session-{}", at / 20),
                title: format!("conversation {}", at / 20),
                text: text.join(" "),
                source: serde_json::Value::Null,
                vector: Some(vector(&mut numbers)),
            }
        })
        .collect();
    let started = Instant::now();
    runtime.block_on(index.upsert(documents)).expect("indexed");
    println!(
        "indexed {MESSAGES} messages in one write: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    for (label, with_vector) in [("search, text", false), ("search, text + vector", true)] {
        let mut times = Vec::with_capacity(SEARCHES);
        for _ in 0..SEARCHES {
            let text = format!(
                "{} {}",
                words[(numbers.next() % words.len() as u64) as usize],
                words[(numbers.next() % words.len() as u64) as usize]
            );
            let query = SearchQuery {
                owner: "bench".into(),
                collection: Collection::Conversations,
                scopes: Vec::new(),
                text,
                all_words: false,
                vector: with_vector.then(|| vector(&mut numbers)),
                limit: 10,
            };
            let started = Instant::now();
            let hits = runtime.block_on(index.search(&query)).expect("searched");
            times.push(started.elapsed());
            assert!(hits.len() <= 10);
        }
        report(label, times);
    }
    let mut times = Vec::with_capacity(UPSERTS);
    for at in 0..UPSERTS {
        let text: Vec<&str> = (0..40)
            .map(|_| words[(numbers.next() % words.len() as u64) as usize])
            .collect();
        let document = SearchDocument {
            id: format!("m{}", MESSAGES + at),
            owner: "bench".into(),
            collection: Collection::Conversations,
            scope: String::new(),
            parent: format!("session-{}", (MESSAGES + at) / 20),
            title: "a later conversation".into(),
            text: text.join(" "),
            source: serde_json::Value::Null,
            vector: Some(vector(&mut numbers)),
        };
        let started = Instant::now();
        runtime
            .block_on(index.upsert(vec![document]))
            .expect("indexed");
        times.push(started.elapsed());
    }
    report("one message upserted", times);
}
