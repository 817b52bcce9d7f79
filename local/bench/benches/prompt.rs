//! The prompt of the next call in a 500-turn session, from the stored events: merge, budgets,
//! active window, BM25 recall and compression (`context.md`). What a run does on the CPU before
//! its first model call; the store read (one query for the log) is outside the measurement.

use criterion::{Criterion, criterion_group, criterion_main};
use sage_core::context::{
    Budgets, ContextSettings, fit_call, merge_events, plan_history, to_model_messages,
};

/// The server's defaults (`--context_*`).
fn default_settings() -> ContextSettings {
    ContextSettings {
        history_ratio: 0.2,
        active_ratio: 0.3,
        max_new_message_ratio: 0.5,
        recent_turns: 0,
    }
}

fn prompt_for_a_long_session(c: &mut Criterion) {
    let log = sage_bench::long_session(500);
    let settings = default_settings();
    let system = "You are Sage, a careful analyst.";
    c.bench_function("prompt_500_turns", |b| {
        b.iter(|| {
            let history = to_model_messages(merge_events(log.iter().map(|s| &s.event)));
            let budgets = Budgets::new(&settings, 32_000, 400);
            let plan = plan_history(
                history,
                Some("earlier: regional reports"),
                &settings,
                budgets,
            );
            let fitted = fit_call(Some(system), &plan.active, &budgets, 300, 1.0e10);
            assert!(fitted.tokens <= 32_000);
            fitted
        })
    });
}

criterion_group!(benches, prompt_for_a_long_session);
criterion_main!(benches, part_benches);

/// The same work in its three parts.
fn parts(c: &mut Criterion) {
    let log = sage_bench::long_session(500);
    let settings = default_settings();
    c.bench_function("part_merge", |b| {
        b.iter(|| merge_events(log.iter().map(|s| &s.event)))
    });
    let merged = merge_events(log.iter().map(|s| &s.event));
    c.bench_function("part_to_model", |b| {
        b.iter(|| to_model_messages(merged.clone()))
    });
    let history = to_model_messages(merged);
    c.bench_function("part_plan", |b| {
        b.iter(|| {
            let budgets = Budgets::new(&settings, 32_000, 400);
            plan_history(history.clone(), None, &settings, budgets)
        })
    });
}
criterion_group!(part_benches, parts);
