//! `pagerhook incidents`: the incident ledger, listed and closed. Opens the store as a tool,
//! like `dlq`, so it works with the server stopped (a resolve is then sent when it starts).

use super::{load_for_tool, Cli};
use crate::app;
use crate::queue::{now_millis, Incident, IncidentQuery, ResolveQueued, Role};
use crate::telemetry;
use clap::{Args, Subcommand};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// `incidents` without a subcommand: the list.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only incidents still open or acknowledged.
    #[arg(long)]
    open: bool,
    /// Only those this source opened.
    #[arg(long)]
    source: Option<String>,
    /// Only those opened longer ago than this (e.g. 2h, 3days).
    #[arg(long, value_parser = humantime::parse_duration)]
    older_than: Option<Duration>,
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// `incidents` subcommands.
#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Queue a resolve, recorded as an operator's, for each dedup_key the ledger holds open.
    Resolve {
        /// dedup_keys, as `incidents` lists them.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

pub async fn incidents(cli: &Cli, command: Option<&IncidentsCommand>, list: &ListArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_for_tool(cli, Some("storage.url"))?;
    let queue = app::open_queue(&cfg, Role::Tool).await?;
    let mut out = std::io::stdout();
    if let Some(IncidentsCommand::Resolve { keys }) = command {
        let done = queue.resolve_incidents(keys.clone(), now_millis()).await?;
        let mut missed = false;
        for d in &done {
            match d {
                ResolveQueued::Queued { dedup_key, events } => {
                    writeln!(out, "resolve queued for {} ({events} lane(s))", telemetry::printable(dedup_key))?
                }
                ResolveQueued::NotOpen { dedup_key } => {
                    missed = true;
                    writeln!(out, "not open in the ledger: {}", telemetry::printable(dedup_key))?
                }
            }
        }
        return Ok(if missed { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    let opened_before = list.older_than.map(|d| now_millis() - d.as_millis().min(i64::MAX as u128) as i64);
    let q = IncidentQuery { open: list.open, source: list.source.clone(), opened_before, limit: list.limit };
    let rows = queue.incidents(q).await?;
    if list.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
    } else {
        for line in lines(&rows, now_millis()) {
            writeln!(out, "{line}")?;
        }
        eprintln!("{} incident(s); pagerhook's record of what it sent, not PagerDuty's", rows.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// The list as a table; dedup_key and summary (a payload chose them) with control characters
/// escaped.
pub(super) fn lines(rows: &[Incident], now: crate::queue::Millis) -> Vec<String> {
    let w_source = rows.iter().map(|r| r.source.len()).chain([6]).max().unwrap_or(6);
    let head =
        format!("{:<12}  {:>8}  {:<w_source$}  {:<8}  DEDUP_KEY / SUMMARY", "STATE", "AGE", "SOURCE", "SEVERITY");
    let rows = rows.iter().map(|r| {
        let age = Duration::from_secs(((now - r.opened_at).max(0) / 1000) as u64);
        let tail = format!("{} / {}", r.dedup_key, r.summary.as_deref().unwrap_or("-"));
        format!(
            "{:<12}  {:>8}  {:<w_source$}  {:<8}  {}",
            r.state.as_str(),
            humantime::format_duration(age).to_string().split(' ').next().unwrap_or("0s"),
            r.source,
            r.severity.as_deref().unwrap_or("-"),
            telemetry::printable(&tail)
        )
    });
    std::iter::once(head).chain(rows).collect()
}
