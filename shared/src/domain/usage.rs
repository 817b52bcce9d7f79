//! The usage ledger read back: what a user (or everyone, for an admin) spent by day and model,
//! and the per-user daily budgets checked before a run starts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use super::DomainError;
use crate::config::{BudgetLeft, DailyBudget};
use crate::store::{UsageLedger, UsageRecord};
use crate::util::{Day, UserId};
use crate::wire::api::{UsageLine, UsageReport, UsageTotals};

/// The longest span one report covers.
pub const MAX_REPORT_DAYS: i64 = 366;
/// The span a report covers when the caller names none: the last 30 days, today included.
const DEFAULT_REPORT_DAYS: u32 = 30;

#[derive(Clone)]
pub struct Usage {
    ledger: Arc<dyn UsageLedger>,
    budget: DailyBudget,
}

impl Usage {
    pub fn new(ledger: Arc<dyn UsageLedger>, budget: DailyBudget) -> Self {
        Self { ledger, budget }
    }

    /// The days a report covers: `from..=to`, by default the last 30 days.
    pub fn span(from: Option<&str>, to: Option<&str>) -> Result<(Day, Day), DomainError> {
        let to = match to {
            Some(to) => Day::parse("to", to)?,
            None => Day::today(),
        };
        let from = match from {
            Some(from) => Day::parse("from", from)?,
            None => to.minus_days(DEFAULT_REPORT_DAYS - 1),
        };
        if from > to {
            return Err(DomainError::invalid("from: a day no later than `to`"));
        }
        if from.span_to(to) > MAX_REPORT_DAYS {
            return Err(DomainError::invalid(format!(
                "from: at most {MAX_REPORT_DAYS} days before `to`"
            )));
        }
        Ok((from, to))
    }

    /// The user's own spending by day and model.
    pub async fn user_report(
        &self,
        user: &UserId,
        (from, to): (Day, Day),
    ) -> Result<UsageReport, DomainError> {
        let records = self
            .ledger
            .user_usage(user.as_str(), &from.to_string(), &to.to_string())
            .await?;
        Ok(report(from, to, records, false))
    }

    /// Everyone's spending by user, day and model: the admin's view.
    pub async fn all_report(&self, (from, to): (Day, Day)) -> Result<UsageReport, DomainError> {
        let records = self
            .ledger
            .all_usage(&from.to_string(), &to.to_string())
            .await?;
        Ok(report(from, to, records, true))
    }

    /// Refuses a run when the user's budget for today is spent; otherwise what is left of it,
    /// which bounds the run.
    pub async fn budget_left(&self, user: &UserId) -> Result<BudgetLeft, DomainError> {
        if self.budget == DailyBudget::default() {
            return Ok(BudgetLeft::default());
        }
        let today = Day::today().to_string();
        let spent = totals(
            &self
                .ledger
                .user_usage(user.as_str(), &today, &today)
                .await?,
        );
        let resets = "it resets at 00:00 UTC";
        let mut left = BudgetLeft::default();
        if let Some(budget) = self.budget.tokens {
            if spent.total_tokens >= budget {
                return Err(DomainError::LimitReached(format!(
                    "your daily budget of {budget} tokens (user_daily_tokens) is spent: {} \
                     tokens today; {resets}",
                    spent.total_tokens
                )));
            }
            left.tokens = Some(budget - spent.total_tokens);
        }
        if let Some(budget) = self.budget.cost {
            let cost = spent.cost.unwrap_or(0.0);
            if cost >= budget {
                return Err(DomainError::LimitReached(format!(
                    "your daily budget of ${budget} (user_daily_cost) is spent: ${cost:.4} \
                     today; {resets}"
                )));
            }
            left.cost = Some(budget - cost);
        }
        Ok(left)
    }
}

/// Adds a record's spending; `runs` counts each run once, however many of its invocations
/// (approvals, hand-offs) recorded usage.
fn add(totals: &mut UsageTotals, runs: &mut HashSet<String>, record: &UsageRecord) {
    if runs.insert(record.run_id.clone()) {
        totals.runs += 1;
    }
    totals.calls += u64::from(record.calls);
    totals.prompt_tokens += record.prompt_tokens;
    totals.completion_tokens += record.completion_tokens;
    totals.total_tokens += record.total_tokens;
    if let Some(cost) = record.cost {
        *totals.cost.get_or_insert(0.0) += cost;
    }
}

fn totals(records: &[UsageRecord]) -> UsageTotals {
    let mut totals = UsageTotals::default();
    let mut runs = HashSet::new();
    for record in records {
        add(&mut totals, &mut runs, record);
    }
    totals
}

fn report(from: Day, to: Day, records: Vec<UsageRecord>, by_user: bool) -> UsageReport {
    type Line = (UsageTotals, HashSet<String>);
    let mut lines: BTreeMap<(String, Option<String>, String), Line> = BTreeMap::new();
    for record in &records {
        let user = by_user.then(|| record.user_id.clone());
        let (totals, runs) = lines
            .entry((record.day.clone(), user, record.model.clone()))
            .or_default();
        add(totals, runs, record);
    }
    UsageReport {
        from: from.to_string(),
        to: to.to_string(),
        total: totals(&records),
        lines: lines
            .into_iter()
            .map(|((day, user_id, model), (totals, _))| UsageLine {
                day,
                user_id,
                model,
                totals,
            })
            .collect(),
    }
}
