//! The usage points of one export request, as the store records them, and
//! the conversion of cumulative series to deltas.

use chrono::{DateTime, Utc};
use tollgate_quota::TokenType;

use crate::alerts::{AlertRecord, AlertRule};

/// A SHA-256 digest that identifies a data point or a series.
pub type Digest = [u8; 32];

/// One `claude_code.token.usage` data point, attributed to the
/// authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsagePoint {
    /// The point's identity: its user, metric, series attributes, start and
    /// end time. A point whose identity was recorded before adds nothing.
    pub id: Digest,
    /// The point's end time; decides the UTC day and month it counts in.
    pub end: DateTime<Utc>,
    /// The `type` attribute as sent, such as `input` or `cacheRead`.
    pub type_name: String,
    /// The token type the point counts as toward limits; `None` keeps the
    /// point in the per-model totals without counting it.
    pub counted_as: Option<TokenType>,
    /// The `model` attribute, such as a Bedrock model id; empty when absent.
    pub model: String,
    pub value: PointValue,
}

/// What a point's value means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointValue {
    /// Tokens used between the point's start and end time.
    Delta(u64),
    /// Tokens used since the series started; the store turns it into a
    /// delta against the last value it recorded for the series.
    Cumulative(CumulativeValue),
}

/// A point of a cumulative series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CumulativeValue {
    /// The identity of the series: the point's identity without times.
    pub series: Digest,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub total: u64,
}

/// The last recorded point of a cumulative series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeriesState {
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub total: u64,
}

/// The usage of one export request for one user, recorded in one store
/// transaction.
#[derive(Debug, Clone)]
pub struct UsageBatch {
    /// The normalised identity from the bearer token.
    pub user: String,
    /// Points in the order to apply them; the points of each cumulative
    /// series in end-time order.
    pub points: Vec<UsagePoint>,
    /// How to evaluate alerts in the same transaction; `None` evaluates none.
    pub alerting: Option<AlertRule>,
}

/// What recording a batch changed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// Points whose identity was new.
    pub recorded: usize,
    /// Points whose identity was recorded before; they added nothing.
    pub duplicates: usize,
    /// Alerts this batch raised; each is raised once per store.
    pub alerts: Vec<AlertRecord>,
}

/// The batches of several export requests, recorded in one store
/// transaction by the ingest writer, and an optional pruning of expired
/// point identities in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct UsageGroup {
    pub batches: Vec<UsageBatch>,
    pub prune: Option<Prune>,
}

/// A request to delete the identities of points that ended before `before`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prune {
    pub before: DateTime<Utc>,
    /// The maximum number of identities deleted, so that one prune holds
    /// the write lock only briefly.
    pub limit: usize,
}

/// The outcome of recording a [`UsageGroup`].
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// One result per batch, in the group's order. Each batch is recorded
    /// in its own savepoint, so a batch that fails changes nothing and the
    /// others are kept.
    pub batches: Vec<crate::store::StoreResult<BatchOutcome>>,
    /// The number of identities the prune deleted.
    pub pruned: usize,
}

/// A user's tokens of one type and model in one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    pub model: String,
    /// The `type` attribute as sent, including types that do not count.
    pub type_name: String,
    pub tokens: u64,
}

/// Returns the tokens a cumulative point adds, and the series state to
/// store, if it changes.
///
/// The first point of a series adds its whole total. A later point of the
/// same start time adds the increase since the last recorded point. A drop
/// in the total, or a later start time, is a restart of the series, so the
/// point adds its whole total. A point older than the last recorded one,
/// or from an earlier start, is already included and adds nothing.
pub fn cumulative_delta(
    previous: Option<SeriesState>,
    point: &CumulativeValue,
) -> (u64, Option<SeriesState>) {
    let next = SeriesState {
        start_unix_nano: point.start_unix_nano,
        end_unix_nano: point.end_unix_nano,
        total: point.total,
    };
    let Some(previous) = previous else {
        return (point.total, Some(next));
    };
    if point.start_unix_nano > previous.start_unix_nano {
        return (point.total, Some(next));
    }
    if point.start_unix_nano < previous.start_unix_nano
        || point.end_unix_nano <= previous.end_unix_nano
    {
        return (0, None);
    }
    match point.total.checked_sub(previous.total) {
        Some(increase) => (increase, Some(next)),
        None => (point.total, Some(next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(start: u64, end: u64, total: u64) -> CumulativeValue {
        CumulativeValue {
            series: [0; 32],
            start_unix_nano: start,
            end_unix_nano: end,
            total,
        }
    }

    fn state(start: u64, end: u64, total: u64) -> Option<SeriesState> {
        Some(SeriesState {
            start_unix_nano: start,
            end_unix_nano: end,
            total,
        })
    }

    #[test]
    fn cumulative_cases() {
        let cases = [
            ("first point", None, point(1, 10, 50), 50, true),
            ("increase", state(1, 10, 50), point(1, 20, 80), 30, true),
            ("no change", state(1, 10, 50), point(1, 20, 50), 0, true),
            (
                "drop is a restart",
                state(1, 10, 50),
                point(1, 20, 7),
                7,
                true,
            ),
            ("new start", state(1, 10, 50), point(15, 20, 9), 9, true),
            ("older point", state(1, 20, 80), point(1, 10, 50), 0, false),
            ("same end", state(1, 20, 80), point(1, 20, 90), 0, false),
            (
                "earlier start",
                state(15, 20, 9),
                point(1, 30, 500),
                0,
                false,
            ),
        ];
        for (name, previous, point, expected, changes) in cases {
            let (delta, next) = cumulative_delta(previous, &point);
            assert_eq!(delta, expected, "{name}: delta");
            assert_eq!(next.is_some(), changes, "{name}: state change");
        }
    }
}
