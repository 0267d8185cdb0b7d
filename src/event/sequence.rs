//! A rule's `sequence`: the number or time a sender puts on an event that tells an old one
//! from a new one (`StateChangeTime`, `startsAt`, a workflow's `run_number`, a pipeline's
//! `id`). Per lane the queue keeps the highest one applied and records an older event as
//! `stale` instead of sending it: SNS retries, Alertmanager HA peers, a re-run of an old
//! workflow or pipelines finishing out of order deliver events out of order.

use std::cmp::Ordering;
use std::fmt;

/// One event's place in its lane's order. Numbers and times never compare with each other:
/// a lane whose values change type (a rule edited, two rules of one lane) is not stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequence {
    /// A whole number (a run number, a pipeline id).
    Number(i64),
    /// An RFC 3339 time, in microseconds since the Unix epoch: finer than any sender needs to
    /// tell two notifications apart, and a BIGINT holds it for ±292 000 years.
    Time(i64),
}

/// Why a rendered `sequence` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sequence {0:?} is neither a whole number nor an RFC 3339 time: the event is not checked for staleness")]
pub struct SequenceError(pub String);

impl Sequence {
    /// A rendered `sequence`; `None` when it renders empty (the payload has none: the event
    /// is not checked).
    pub fn parse(text: &str) -> Result<Option<Sequence>, SequenceError> {
        let t = text.trim();
        if t.is_empty() {
            return Ok(None);
        }
        if let Ok(n) = t.parse::<i64>() {
            return Ok(Some(Sequence::Number(n)));
        }
        let bad = || SequenceError(truncated(t));
        let time = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(|_| bad())?;
        let micros = i64::try_from(time.unix_timestamp_nanos() / 1_000).map_err(|_| bad())?;
        Ok(Some(Sequence::Time(micros)))
    }

    /// The stored form: its kind and value (`lane_sequences`).
    pub fn stored(self) -> (&'static str, i64) {
        match self {
            Sequence::Number(n) => ("number", n),
            Sequence::Time(t) => ("time", t),
        }
    }

    /// A stored form read back; `None` for a kind this build does not know.
    pub fn from_stored(kind: &str, value: i64) -> Option<Sequence> {
        match kind {
            "number" => Some(Sequence::Number(value)),
            "time" => Some(Sequence::Time(value)),
            _ => None,
        }
    }

    /// How `self` compares with `other`; `None` when their types differ.
    pub fn compare(self, other: Sequence) -> Option<Ordering> {
        match (self, other) {
            (Sequence::Number(a), Sequence::Number(b)) | (Sequence::Time(a), Sequence::Time(b)) => Some(a.cmp(&b)),
            (Sequence::Number(_), Sequence::Time(_)) | (Sequence::Time(_), Sequence::Number(_)) => None,
        }
    }

    /// What a lane that applied `applied` (if any) makes of an event carrying `self`: the one
    /// rule the queue (`queue::lanes`) and the scenarios' model both follow.
    pub fn verdict(self, applied: Option<Sequence>) -> Verdict {
        match applied.map(|a| self.compare(a)) {
            Some(Some(Ordering::Less)) => Verdict::Stale,
            Some(None) => Verdict::OtherType,
            Some(Some(Ordering::Equal | Ordering::Greater)) | None => Verdict::Fresh,
        }
    }
}

/// [`Sequence::verdict`]: whether an event is sent, and the lane applies its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not older than what the lane applied (an equal value is a repeated notification or a
    /// re-run of the latest run), or the lane applied none: sent, and its value applies.
    Fresh,
    /// Older than what the lane applied: not sent; the lane keeps its value.
    Stale,
    /// Of another type than what the lane applied (a number and a time): not compared, sent,
    /// and its value applies.
    OtherType,
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Sequence::Number(n) => write!(f, "{n}"),
            Sequence::Time(micros) => {
                let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                    .ok()
                    .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok());
                match t {
                    Some(t) => f.write_str(&t),
                    None => write!(f, "{micros}µs"),
                }
            }
        }
    }
}

/// A rendered value as an error shows it: a template gone wrong may render a whole payload.
fn truncated(t: &str) -> String {
    crate::event::truncate_chars(t, 80).0
}

#[cfg(test)]
mod tests;
