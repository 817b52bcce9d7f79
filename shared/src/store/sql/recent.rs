//! SQLite's tier for runs in progress. The keyed log (`events`, ordered by session and sequence
//! number) makes every shared write rewrite one page per session it touches, and a streaming
//! run touches its session's page with every token. While a run streams, its events go instead
//! to `recent_events`, kept in arrival order, where a shared write adds to the last page or two;
//! when the run ends its events are copied into the keyed log in one piece. Rows copied out are
//! deleted from the front of the table now and then (a sweep).
//!
//! This process remembers which sessions have rows in the tier and under which row ids, so a
//! read unions the tier only for those, by id, and a taken sequence number is refused before
//! anything is written. A run's first write goes to the keyed log, whose key refuses a taken
//! number there. Rows another process left in the tier (it was killed) are copied into the
//! keyed log when the store is opened, and by any sweep.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::wire::{EventType, StoredEvent};

/// Rows added to the tier between sweeps.
const SWEEP_EVERY_ROWS: usize = 4096;
/// A session with this many rows in the tier moves them to the keyed log and starts over, so
/// that a long run's rows are read and moved by a bounded list of ids.
const MAX_ROWS_PER_SESSION: usize = 512;
/// Rows an idle sweep moves in one write at most; the rest wait for the next sweep.
const MAX_IDLE_ROWS_MOVED: usize = 65_536;
/// A session that has written nothing for this long leaves the tier at the next sweep, though
/// its run has not ended (it waits on a tool, or its writer failed).
const IDLE_AFTER: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(super) struct RecentTier {
    sessions: HashMap<String, RecentLog>,
    rows_since_sweep: usize,
}

struct RecentLog {
    /// Row ids of this session's events in the tier, in sequence order.
    ids: Vec<i64>,
    last_seq: u64,
    touched: Instant,
}

/// Where one batch of a write goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    Keyed,
    Recent,
}

/// What one write does to the tier; applied to this process's view once the write commits.
#[derive(Debug)]
pub(super) struct Plan {
    /// One per batch.
    pub routes: Vec<Route>,
    /// Tier rows to copy into the keyed log: those of runs that end in this write, and of idle
    /// sessions at a sweep.
    pub moved: Vec<i64>,
    /// At a sweep: tier rows up to this id are copied into the keyed log (where they are not
    /// already) and deleted. No session still in the tier has a row at or below it.
    pub sweep_through: Option<i64>,
    left: Vec<String>,
    entered: Vec<(String, u64)>,
    /// Sessions whose batches go to the tier, with their last sequence number and row count, in
    /// the order of the rows.
    appended: Vec<(String, u64, usize)>,
}

/// A batch's sequence number is already taken.
#[derive(Debug)]
pub(super) struct Taken {
    pub session_id: String,
    pub seq: u64,
}

impl RecentTier {
    /// Routes each `(session, events)` batch of one write.
    pub fn plan(&self, batches: &[(&str, &[StoredEvent])]) -> Result<Plan, Taken> {
        let mut plan = Plan {
            routes: Vec::with_capacity(batches.len()),
            moved: Vec::new(),
            sweep_through: None,
            left: Vec::new(),
            entered: Vec::new(),
            appended: Vec::new(),
        };
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (session_id, _) in batches {
            *seen.entry(session_id).or_default() += 1;
        }
        let mut recent_rows = 0;
        for (session_id, events) in batches {
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                plan.routes.push(Route::Keyed);
                continue;
            };
            let ends = events
                .iter()
                .any(|stored| stored.event.kind == EventType::StreamEnd);
            match self.sessions.get(*session_id) {
                Some(log) if first.seq <= log.last_seq => {
                    return Err(Taken {
                        session_id: (*session_id).to_owned(),
                        seq: first.seq,
                    });
                }
                // Twice in one write (never from one run's writer): kept simple, in the keyed
                // log, with the tier's rows read alongside until the session leaves it.
                Some(_) if seen[session_id] > 1 => plan.routes.push(Route::Keyed),
                Some(log) if ends || log.ids.len() + events.len() > MAX_ROWS_PER_SESSION => {
                    plan.routes.push(Route::Keyed);
                    plan.moved.extend(&log.ids);
                    plan.left.push((*session_id).to_owned());
                    if !ends {
                        plan.entered.push(((*session_id).to_owned(), last.seq));
                    }
                }
                Some(_) => {
                    plan.routes.push(Route::Recent);
                    plan.appended
                        .push(((*session_id).to_owned(), last.seq, events.len()));
                    recent_rows += events.len();
                }
                None => {
                    plan.routes.push(Route::Keyed);
                    if !ends && seen[session_id] == 1 {
                        plan.entered.push(((*session_id).to_owned(), last.seq));
                    }
                }
            }
        }
        if self.rows_since_sweep + recent_rows >= SWEEP_EVERY_ROWS {
            let now = Instant::now();
            let mut oldest_kept = i64::MAX;
            for (session_id, log) in &self.sessions {
                if plan.left.iter().any(|left| left == session_id) {
                    continue;
                }
                let written_now = plan.appended.iter().any(|(id, ..)| id == session_id);
                let idle = !written_now && now.duration_since(log.touched) >= IDLE_AFTER;
                if idle && plan.moved.len() + log.ids.len() <= MAX_IDLE_ROWS_MOVED {
                    plan.moved.extend(&log.ids);
                    plan.left.push(session_id.clone());
                } else if let Some(first) = log.ids.first() {
                    oldest_kept = oldest_kept.min(*first);
                }
            }
            plan.sweep_through = Some(oldest_kept.saturating_sub(1));
        }
        Ok(plan)
    }

    /// Records a committed write. `last_id` is the id of the last row it added to the tier.
    pub fn apply(&mut self, plan: Plan, last_id: Option<i64>) {
        let now = Instant::now();
        for session_id in plan.left {
            self.sessions.remove(&session_id);
        }
        for (session_id, last_seq) in plan.entered {
            self.sessions.insert(
                session_id,
                RecentLog {
                    ids: Vec::new(),
                    last_seq,
                    touched: now,
                },
            );
        }
        let added: usize = plan.appended.iter().map(|(_, _, rows)| rows).sum();
        if let Some(last_id) = last_id {
            let mut next = last_id - added as i64 + 1;
            for (session_id, last_seq, rows) in plan.appended {
                if let Some(log) = self.sessions.get_mut(&session_id) {
                    log.ids.extend(next..next + rows as i64);
                    log.last_seq = last_seq;
                    log.touched = now;
                }
                next += rows as i64;
            }
        }
        if plan.sweep_through.is_some() {
            self.rows_since_sweep = 0;
        } else {
            self.rows_since_sweep += added;
        }
    }

    /// The session's rows in the tier and its last sequence number, while it is there.
    pub fn rows_of(&self, session_id: &str) -> Option<(Vec<i64>, u64)> {
        self.sessions
            .get(session_id)
            .map(|log| (log.ids.clone(), log.last_seq))
    }

    /// The session was deleted.
    pub fn forget(&mut self, session_id: &str) {
        self.sessions.remove(session_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Event, Role};

    fn events(session_id: &str, seqs: std::ops::RangeInclusive<u64>) -> Vec<StoredEvent> {
        seqs.map(|seq| {
            StoredEvent::new(
                seq,
                Event::new(session_id, Role::Assistant, EventType::Normal),
            )
        })
        .collect()
    }

    fn write_of<'a>(
        names: &'a [String],
        batches: &'a [Vec<StoredEvent>],
    ) -> Vec<(&'a str, &'a [StoredEvent])> {
        names
            .iter()
            .zip(batches)
            .map(|(name, batch)| (name.as_str(), batch.as_slice()))
            .collect()
    }

    fn ended(session_id: &str, seq: u64) -> Vec<StoredEvent> {
        vec![StoredEvent::new(seq, Event::stream_end(session_id, seq))]
    }

    #[test]
    fn a_run_enters_with_its_first_write_streams_into_the_tier_and_leaves_when_it_ends() {
        let mut tier = RecentTier::default();
        let first = events("s", 1..=2);
        let plan = tier.plan(&[("s", &first)]).unwrap();
        assert_eq!(plan.routes, [Route::Keyed]);
        tier.apply(plan, None);

        let streamed = events("s", 3..=5);
        let plan = tier.plan(&[("s", &streamed)]).unwrap();
        assert_eq!(plan.routes, [Route::Recent]);
        tier.apply(plan, Some(12));
        assert_eq!(tier.rows_of("s"), Some((vec![10, 11, 12], 5)));

        let taken = tier.plan(&[("s", &events("s", 5..=6))]).unwrap_err();
        assert_eq!((taken.session_id.as_str(), taken.seq), ("s", 5));

        let end = ended("s", 6);
        let plan = tier.plan(&[("s", &end)]).unwrap();
        assert_eq!(plan.routes, [Route::Keyed]);
        assert_eq!(plan.moved, [10, 11, 12]);
        tier.apply(plan, None);
        assert_eq!(tier.rows_of("s"), None);
    }

    #[test]
    fn a_long_run_moves_its_rows_to_the_keyed_log_every_few_hundred() {
        let mut tier = RecentTier::default();
        let first = events("s", 1..=1);
        let plan = tier.plan(&[("s", &first)]).unwrap();
        tier.apply(plan, None);
        let mut id = 0;
        for seq in 2..=MAX_ROWS_PER_SESSION as u64 + 1 {
            let one = events("s", seq..=seq);
            let plan = tier.plan(&[("s", &one)]).unwrap();
            assert_eq!(plan.routes, [Route::Recent]);
            id += 1;
            tier.apply(plan, Some(id));
        }
        let next = MAX_ROWS_PER_SESSION as u64 + 2;
        let one = events("s", next..=next);
        let plan = tier.plan(&[("s", &one)]).unwrap();
        assert_eq!(plan.routes, [Route::Keyed]);
        assert_eq!(plan.moved.len(), MAX_ROWS_PER_SESSION);
        tier.apply(plan, None);
        assert_eq!(tier.rows_of("s"), Some((Vec::new(), next)));
        let taken = tier.plan(&[("s", &one)]).unwrap_err();
        assert_eq!(taken.seq, next);
    }

    #[test]
    fn a_sweep_deletes_only_below_the_oldest_row_still_in_the_tier() {
        let mut tier = RecentTier::default();
        let names: Vec<String> = (0..16).map(|n| format!("s{n}")).collect();
        for name in &names {
            let first = events(name, 1..=1);
            let plan = tier.plan(&[(name.as_str(), &first)]).unwrap();
            tier.apply(plan, None);
        }
        let mut id = 0;
        let mut seq = 1;
        while tier.rows_since_sweep + names.len() < SWEEP_EVERY_ROWS {
            seq += 1;
            let batches: Vec<Vec<StoredEvent>> =
                names.iter().map(|name| events(name, seq..=seq)).collect();
            let plan = tier.plan(&write_of(&names, &batches)).unwrap();
            assert!(plan.sweep_through.is_none());
            id += names.len() as i64;
            tier.apply(plan, Some(id));
        }
        let mut batches = vec![ended("s0", seq + 1)];
        batches.extend(
            names[1..]
                .iter()
                .map(|name| events(name, seq + 1..=seq + 2)),
        );
        let plan = tier.plan(&write_of(&names, &batches)).unwrap();
        assert_eq!(plan.moved.len(), (seq - 1) as usize, "s0's rows are copied");
        assert_eq!(plan.sweep_through, Some(1), "s1's first row is id 2");
        tier.apply(plan, Some(id + 30));
        assert_eq!(tier.rows_since_sweep, 0);
        assert_eq!(tier.rows_of("s0"), None);
        let (ids, last_seq) = tier.rows_of("s15").unwrap();
        assert_eq!((ids.len() as u64, last_seq), (seq + 1, seq + 2));
        assert_eq!(ids[ids.len() - 2..], [id + 29, id + 30]);
    }
}
