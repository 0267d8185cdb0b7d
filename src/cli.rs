//! The command line: `serve`, `check`, `render`, `test`, `health`, `deliveries list`, `dlq`,
//! `incidents`.
//!
//! `deliveries`, `dlq` and `incidents` open the store directly (beside a running server, or without one),
//! so they work when the service is down, which is when they are needed most.

use crate::app::{self, App, Options};
use crate::config::{placeholder_key, Config, ConfigError};
use crate::ingest::{IgnoreReason, Pipeline, Replayed};
use crate::mapping::{Mapping, RoutingKeys};
use crate::queue::{DeadId, DeadLetter, EventQuery, EventState, EventSummary, Millis, Queue, Role};
use crate::registry::Sources;
use crate::reload::Live;
use crate::telemetry::{self, LogFormat};
use crate::testcases;
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

mod incidents;

/// `println!` that returns an error instead of panicking when stdout is closed
/// (`pagerhook render … | head`); `main` ends quietly on that error.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($t)*)?
    }};
}

/// Verify webhooks and deliver them to PagerDuty, in order, without losing one.
#[derive(Debug, Parser)]
#[command(name = "pagerhook", version)]
pub struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "PAGERHOOK_CONFIG", default_value = "pagerhook.toml")]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook and admin listeners and the delivery worker.
    Serve {
        /// Log each event instead of sending it (and record it as `dry_run`).
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config and compile every mapping; exit 1 on any error, an unset secret
    /// included.
    Check {
        /// Do not count unset secrets as errors (CI, where the secrets are not); they are
        /// listed as not checked.
        #[arg(long)]
        no_secrets: bool,
    },
    /// Print the events a payload file would produce; sends nothing.
    Render {
        /// Source whose mappings to use.
        #[arg(long)]
        source: String,
        /// Request header, e.g. -H 'X-GitHub-Event: pull_request' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Query string of the webhook URL, e.g. --query 'insufficient_data=trigger'.
        #[arg(long, default_value = "")]
        query: String,
        /// Payload file (the request body).
        file: PathBuf,
    },
    /// Run mapping test files (`*.test.toml`: cases and scenarios) offline: verifies nothing,
    /// sends nothing, stores nothing; exit 1 if any failed or none ran.
    Test {
        /// Test files (default: every *.test.toml under the config file's folder).
        files: Vec<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Fail a test whose events were changed to fit PagerDuty's limits (a summary cut, an
        /// image dropped), not only note it.
        #[arg(long)]
        strict: bool,
    },
    /// Exit 0 when the running service's admin listener answers `/readyz` with 200 (for
    /// container health checks, where there is no curl).
    Health,
    /// Inspect recent deliveries.
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Dead letters: events PagerDuty refused or that ran out of retries, and payloads whose
    /// mapping failed or that made more than max_events_per_request events.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// The incident ledger: what pagerhook triggered and believes open (its record of what it
    /// sent and PagerDuty accepted, not PagerDuty's truth), and an operator's resolve.
    #[command(args_conflicts_with_subcommands = true)]
    Incidents {
        #[command(subcommand)]
        command: Option<incidents::IncidentsCommand>,
        #[command(flatten)]
        list: incidents::ListArgs,
    },
}

/// `dlq` subcommands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Dead letters, newest first.
    List {
        /// Only this source's.
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter: why it died, every attempt, the event and the stored request.
    Show { id: String },
    /// Queue a dead event again, or map a failed payload again with the current mappings.
    Replay {
        /// What `dlq list` shows in its ID column.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every dead letter (oldest first).
        #[arg(long)]
        all: bool,
        /// With --all: only this source's.
        #[arg(long, requires = "all")]
        source: Option<String>,
        /// Replay dead triggers whose incident was resolved after they died too (skipped
        /// otherwise: each would open an incident nothing closes).
        #[arg(long)]
        force: bool,
    },
    /// Forget a dead letter.
    Delete { id: String },
}

/// `deliveries` subcommands.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Recent events and where each stands, newest first.
    List {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only events whose summary or dedup_key contains this (any case), or whose source
        /// or state is this: the console's search.
        #[arg(long)]
        search: Option<String>,
        /// Only this source's events.
        #[arg(long)]
        source: Option<String>,
        /// Only events in this state: pending, delivered, dry_run, dead, collapsed, replayed,
        /// damped, stale.
        #[arg(long)]
        state: Option<String>,
        /// Only events created since: a time (RFC 3339, `2026-01-02T03:04:05Z`) or a span
        /// back from now (`2h`, `30m`, `1day`).
        #[arg(long, value_parser = parse_since)]
        since: Option<Millis>,
        /// Print JSON instead of a table (times in RFC 3339).
        #[arg(long)]
        json: bool,
    },
    /// One event: as sent, every attempt with PagerDuty's answer, and the request it came
    /// from, as JSON (times in RFC 3339).
    Show {
        /// The event's number: `deliveries list`'s ID column.
        id: i64,
    },
}

/// `--since`: an RFC 3339 time, or a span back from now.
fn parse_since(s: &str) -> Result<Millis, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis);
    }
    match humantime::parse_duration(s) {
        Ok(d) => Ok(crate::queue::now_millis() - d.as_millis() as Millis),
        Err(_) => Err(format!("{s:?} is neither an RFC 3339 time (2026-01-02T03:04:05Z) nor a span (2h, 30m, 1day)")),
    }
}

/// Millisecond times in JSON output as RFC 3339 (UTC, to the millisecond), for people and
/// for tools that read dates: the store's fields that hold [`Millis`], in a row, a list of
/// rows and an event's `attempt_log`; never inside the event or payload, which are as sent.
fn rfc3339_times(v: &mut serde_json::Value) {
    const TIMES: &[&str] = &["created_at", "at", "received_at", "done_at", "next_at"];
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match v.as_i64().filter(|_| TIMES.contains(&k.as_str())) {
                    Some(ms) => *v = serde_json::Value::String(rfc3339_millis(ms)),
                    None if k == "attempt_log" => rfc3339_times(v),
                    None => {}
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(rfc3339_times),
        _ => {}
    }
}

fn rfc3339_millis(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.ok().and_then(|t| t.format(fmt).ok()).unwrap_or_else(|| ms.to_string())
}

/// `value` as pretty JSON with its times in RFC 3339.
fn json_out(value: &impl serde::Serialize) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(value)?;
    rfc3339_times(&mut v);
    Ok(serde_json::to_string_pretty(&v)?)
}

/// Entry point for the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

/// The config with every secret resolved: for `serve`.
fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config, &Config::process_env)?)
}

/// The config for a command that needs no secret, or only those whose field starts with
/// `need` (`""`: all of them).
fn load_for_tool(cli: &Cli, need: Option<&str>) -> anyhow::Result<Config> {
    let cfg = Config::load_unresolved(&cli.config, &Config::process_env)?;
    if let Some(prefix) = need {
        cfg.require_resolved(prefix).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    Ok(cfg)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { dry_run } => {
            let cfg = load(&cli)?;
            // Held until `serve` returns; the kernel releases it if the process dies.
            let _lock = app::lock_store(&cfg)?;
            let app = App::start(cfg, Options { dry_run: *dry_run, ..Options::default() }).await?;
            app.run_until_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { no_secrets } => check(&cli, *no_secrets),
        Command::Test { files, json, strict } => test(&cli, files, *json, *strict),
        Command::Dlq { command } => dlq(&cli, command).await,
        Command::Incidents { command, list } => incidents::incidents(&cli, command.as_ref(), list).await,
        Command::Health => {
            let cfg = load_for_tool(&cli, None)?;
            health(cfg.server.admin_listen)
        }
        Command::Render { source, headers, query, file } => {
            render(&cli, source, headers, query, file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliveries { command } => deliveries(&cli, command).await,
    }
}

async fn deliveries(cli: &Cli, command: &DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let cfg = load_for_tool(cli, Some("storage.url"))?;
    let queue = app::open_queue(&cfg, Role::Tool).await?;
    match command {
        DeliveriesCommand::List { limit, search, source, state, since, json } => {
            if let Some(s) = state.as_deref().filter(|s| EventState::ALL.iter().all(|st| st.as_str() != *s)) {
                let states: Vec<_> = EventState::ALL.iter().map(|s| s.as_str()).collect();
                bail!("--state {s:?}: expected one of {}", states.join(", "));
            }
            let q = EventQuery {
                search: search.clone(),
                limit: *limit,
                source: source.clone(),
                state: state.clone(),
                since: *since,
                ..EventQuery::default()
            };
            let rows: Vec<EventSummary> = queue.events(q).await?.into_iter().map(|r| r.summary).collect();
            if *json {
                out!("{}", json_out(&rows)?);
            } else {
                deliveries_table(&rows)?;
            }
        }
        DeliveriesCommand::Show { id } => match queue.event(*id).await? {
            Some(e) => out!("{}", json_out(&e)?),
            None => bail!("no event {id} (see `deliveries list`)"),
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// `deliveries list` as a table whose columns are as wide as their widest value.
fn deliveries_table(rows: &[EventSummary]) -> anyhow::Result<()> {
    for line in table_lines(rows) {
        out!("{line}");
    }
    Ok(())
}

fn table_lines(rows: &[EventSummary]) -> Vec<String> {
    let width = |head: &str, f: &dyn Fn(&EventSummary) -> usize| rows.iter().map(f).chain([head.len()]).max();
    let w_id = width("ID", &|r| r.id.to_string().len()).unwrap_or(2);
    let w_state = width("STATE", &|r| r.state.as_str().len()).unwrap_or(5);
    let w_source = width("SOURCE", &|r| r.source.len()).unwrap_or(6);
    let w_kind = width("KIND", &|r| r.kind.len()).unwrap_or(4);
    let w_action = width("ACTION", &|r| r.action.as_deref().unwrap_or("-").len()).unwrap_or(6);
    let mut lines = vec![format!(
        "{:>w_id$}  {:<w_state$}  {:<w_source$}  {:<w_kind$}  {:<w_action$}  {:>3}  DEDUP_KEY / LAST ERROR",
        "ID", "STATE", "SOURCE", "KIND", "ACTION", "TRY"
    )];
    for r in rows {
        let mut tail = match (&r.dedup_key, &r.last_error) {
            (k, Some(e)) if r.state != EventState::Delivered => format!("{} / {e}", k.as_deref().unwrap_or("-")),
            (k, _) => k.clone().unwrap_or_else(|| "-".into()),
        };
        // PagerDuty filed it under another key: later acknowledges and resolves miss.
        if let Some(pd) = r.pagerduty_dedup_key.as_ref().filter(|pd| r.dedup_key.as_ref() != Some(*pd)) {
            tail = format!("{tail} (PagerDuty: {pd})");
        }
        lines.push(format!(
            "{:>w_id$}  {:<w_state$}  {:<w_source$}  {:<w_kind$}  {:<w_action$}  {:>3}  {}",
            r.id,
            r.state,
            r.source,
            r.kind,
            r.action.as_deref().unwrap_or("-"),
            r.attempts,
            // A payload chose the dedup_key, and errors quote it: no control character reaches
            // the terminal.
            telemetry::printable(&tail)
        ));
    }
    lines
}

async fn dlq(cli: &Cli, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    // Replaying maps payloads into events, which carry real routing keys: those, and no other
    // secret (verification secrets, the admin token), since nothing is verified or served.
    let cfg = load_for_tool(cli, Some("storage.url"))?;
    if matches!(command, DlqCommand::Replay { .. }) {
        cfg.require_resolved("pagerduty.").map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let queue = app::open_queue(&cfg, Role::Tool).await?;
    let parse =
        |id: &str| DeadId::parse(id).with_context(|| format!("{id:?} is not a dead-letter id (see `dlq list`)"));
    match command {
        DlqCommand::List { source, limit, json } => {
            let rows = queue.dead_letters(source.clone(), *limit).await?;
            if *json {
                out!("{}", json_out(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            print_dead_letters(&rows)?;
            eprintln!("{} dead letter(s)", rows.len());
        }
        DlqCommand::Show { id } => match queue.dead_letter(parse(id)?).await? {
            Some(d) => out!("{}", json_out(&d)?),
            None => bail!("no dead letter {id}"),
        },
        DlqCommand::Delete { id } => {
            if !queue.delete_dead(parse(id)?).await? {
                bail!("no dead letter {id}");
            }
            out!("deleted {id}");
        }
        DlqCommand::Replay { id, source, force, .. } => {
            // Replay maps with the mappings on disk now, which is the point: fix, then replay.
            let id = id.as_deref().map(|id| Ok::<_, anyhow::Error>((id, parse(id)?))).transpose()?;
            return replay(&cfg, queue, id, source.as_deref(), *force).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_dead_letters(rows: &[DeadLetter]) -> std::io::Result<()> {
    for line in dead_letter_lines(rows) {
        out!("{line}");
    }
    Ok(())
}

/// `dlq list` as lines; the dedup_key and the reason (a mapping error quotes the payload) with
/// control characters escaped.
fn dead_letter_lines(rows: &[DeadLetter]) -> Vec<String> {
    let head =
        format!("{:<36}  {:<14} {:<14} {:<8} {:>3}  DEDUP_KEY / REASON", "ID", "KIND", "SOURCE", "ACTION", "TRY");
    let rows = rows.iter().map(|r| {
        let tail = format!("{} / {}", r.dedup_key.as_deref().unwrap_or("-"), r.reason);
        format!(
            "{:<36}  {:<14} {:<14} {:<8} {:>3}  {}",
            r.id,
            r.kind,
            r.source,
            r.action.as_deref().unwrap_or("-"),
            r.attempts,
            telemetry::printable(&tail)
        )
    });
    std::iter::once(head).chain(rows).collect()
}

/// Replays one dead letter or all (of a source) through the mappings on disk; fails if any
/// is still not mapped.
async fn replay(
    cfg: &Config,
    queue: Arc<dyn Queue>,
    one: Option<(&str, DeadId)>,
    source: Option<&str>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    let (sources, _) = Sources::build(cfg)?;
    let pipeline = Pipeline::new(
        Arc::new(Live::new(sources)),
        Default::default(),
        queue,
        Default::default(),
        crate::ingest::Cpu::new(1),
    );
    let results = match one {
        Some((id, dead)) => vec![(id.to_string(), pipeline.replay(&dead, force).await)],
        None => pipeline.replay_all(source, force).await?,
    };
    let mut failed = 0;
    for (id, r) in results {
        match r {
            Ok(Replayed::Requeued { event_id }) => out!("{id}: queued again as event {event_id}"),
            Ok(Replayed::Remapped { events }) => out!("{id}: mapped into {events} event(s), queued"),
            Ok(Replayed::Ignored { reason }) => out!("{id}: mapped to nothing ({reason})"),
            Ok(Replayed::Skipped { reason }) => out!("{id}: skipped: {reason} (--force)"),
            Ok(Replayed::StillFailing { error }) => {
                failed += 1;
                out!("{id}: still not mapped: {}", telemetry::printable(&error));
            }
            Ok(Replayed::Partly { events, error }) => {
                failed += 1;
                out!("{id}: mapped into {events} event(s), queued; still not mapped: {}", telemetry::printable(&error));
            }
            Err(e) => {
                failed += 1;
                out!("{id}: {}", telemetry::printable(&e.to_string()));
            }
        }
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Every problem of the config and its mappings at once: an invalid config still has the
/// mappings of its valid sources compiled, and an unset secret is one problem among the rest.
fn check(cli: &Cli, no_secrets: bool) -> anyhow::Result<ExitCode> {
    let cfg = match Config::load_unresolved(&cli.config, &Config::process_env) {
        Ok(c) => c,
        Err(ConfigError::Invalid { mut errors, partial, .. }) => {
            for s in &partial.sources {
                let named = partial.routing_key_names.iter().map(|n| (n.clone(), placeholder_key())).collect();
                let keys = RoutingKeys { default: Some(placeholder_key()), named };
                if let Err(e) = Mapping::load(&s.mappings, keys) {
                    errors.extend(e.iter().map(ToString::to_string));
                }
            }
            return Ok(report_errors(&cli.config, &errors));
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let built = Sources::build(&cfg);
    let mut errors: Vec<String> =
        built.as_ref().err().into_iter().flat_map(|e| &e.0).map(ToString::to_string).collect();
    if no_secrets {
        if !cfg.unresolved.is_empty() {
            eprintln!("note: {} unset secret(s) not checked (--no-secrets)", cfg.unresolved.len());
        }
    } else {
        errors.extend(cfg.unresolved.iter().cloned());
    }
    let warnings = built.as_ref().map(|(_, w)| w.clone()).unwrap_or_default();
    for w in cfg.warnings.iter().chain(&warnings) {
        eprintln!("warning: {w}");
    }
    let sources = match built {
        Ok((sources, _)) if errors.is_empty() => sources,
        _ => return Ok(report_errors(&cfg.path, &errors)),
    };
    let mut names: Vec<_> = sources.names().collect();
    names.sort();
    let cases = test_cases_by_source(&cfg);
    for n in names {
        let s = sources.get(n).expect("listed");
        let tested = match cases.get(n) {
            Some(k) => format!("; {k} test case(s): `pagerhook test` renders them"),
            None => String::new(),
        };
        out!("source '{n}': {} rule(s) compiled{tested}", s.mapping().rule_count());
    }
    out!("{}: OK", cfg.path.display());
    // `check` compiles templates; whether they find their fields in real payloads only a
    // rendering can tell (`{{body.monitr}}` compiles).
    eprintln!("note: check compiles templates but reads no payload: `pagerhook test` checks them against payloads");
    Ok(ExitCode::SUCCESS)
}

/// How many `*.test.toml` cases under the config's folder name each source (those `pagerhook
/// test` would find); a file that does not load counts none.
fn test_cases_by_source(cfg: &Config) -> std::collections::BTreeMap<String, usize> {
    let dir = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let mut counts = std::collections::BTreeMap::new();
    for f in testcases::discover(dir).unwrap_or_default() {
        for c in testcases::TestFile::load(&f).map(|tf| tf.cases).unwrap_or_default() {
            *counts.entry(c.source().to_string()).or_insert(0) += 1;
        }
    }
    counts
}

/// `env:` secrets that are not set get a stable placeholder: a test verifies and sends nothing,
/// so it needs no secret and runs in any CI.
fn test_env(name: &str) -> Option<String> {
    use sha2::Digest as _;
    Config::process_env(name).or_else(|| Some(hex::encode(sha2::Sha256::digest(name.as_bytes()))[..32].to_string()))
}

fn test(cli: &Cli, files: &[PathBuf], json: bool, strict: bool) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&cli.config, &test_env)?;
    let (sources, _) = Sources::build(&cfg)?;
    let discovered = files.is_empty();
    let files = if discovered {
        let dir = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        testcases::discover(dir)?
    } else {
        files.to_vec()
    };
    let mut reports = Vec::new();
    let mut broken = 0;
    for f in &files {
        match testcases::TestFile::load(f) {
            // A found file none of whose sources this config runs tests a mapping not in use
            // here (a shipped one): say so and go on. A file named on the command line runs.
            Ok(tf) if discovered && !tf.sources().any(|s| sources.get(s).is_some()) => {
                eprintln!("skipped {}: none of its sources is in {}", f.display(), cfg.path.display());
            }
            Ok(tf) => reports.extend(testcases::run(&tf, &cfg, &sources)),
            Err(errors) => {
                broken += 1;
                for e in errors {
                    eprintln!("error: {e}");
                }
            }
        }
    }
    if strict {
        reports.iter_mut().for_each(testcases::CaseReport::strict);
    }
    if discovered {
        warn_untested(&sources, &reports);
    }
    if json {
        let failed = reports.iter().filter(|r| !r.passed).count();
        let out = serde_json::json!({ "passed": reports.len() - failed, "failed": failed, "broken_files": broken, "cases": reports });
        out!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        {
            use std::io::Write as _;
            write!(std::io::stdout(), "{}", testcases::text_report(&reports))?;
        }
    }
    if reports.is_empty() {
        eprintln!("error: no case or scenario ran: a test run that tests nothing must not pass");
    }
    let ok = broken == 0 && !reports.is_empty() && reports.iter().all(|r| r.passed);
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A configured source no case or scenario ran through is a mapping nobody tested.
fn warn_untested(sources: &Sources, reports: &[testcases::CaseReport]) {
    let tested = testcases::per_source(reports);
    let mut names: Vec<_> = sources.names().filter(|n| !tested.contains_key(n)).collect();
    names.sort();
    for n in names {
        eprintln!("warning: source '{n}' has no test: add a [[case]] or [[scenario]] for it to a *.test.toml");
    }
}

fn report_errors(path: &std::path::Path, errors: &[String]) -> ExitCode {
    for e in errors {
        eprintln!("error: {e}");
    }
    eprintln!("{}: {} error(s)", path.display(), errors.len());
    ExitCode::FAILURE
}

fn render(cli: &Cli, source: &str, headers: &[String], query: &str, file: &PathBuf) -> anyhow::Result<()> {
    // Rendering verifies and sends nothing: it needs no secret. A routing key not resolved is
    // a placeholder; the events shown are the same.
    let cfg = load_for_tool(cli, None)?;
    if !cfg.unresolved.is_empty() {
        eprintln!("note: {} secret(s) not set, which render does not need; a routing key not set shows as a placeholder's fingerprint", cfg.unresolved.len());
    }
    let (sources, _) = Sources::build(&cfg)?;
    if sources.get(source).is_none() {
        bail!("no source named '{source}' in {}", cfg.path.display());
    }
    let mut pairs = Vec::new();
    for h in headers {
        let Some((k, v)) = h.split_once(':') else { bail!("header {h:?} is not 'Name: value'") };
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let looks_bare = looks_like_cloudwatch(&body);
    let preview = match crate::ingest::preview(&sources, source, pairs, query, body.into(), None) {
        Ok(p) => p,
        Err(crate::ingest::PreviewError::Source(e)) if looks_bare => bail!(
            "{e}: {} looks like a bare CloudWatch alarm message, not an SNS notification. SNS delivers it \
             as the Message string of a notification envelope: render a whole notification as SNS posts it \
             (e.g. fixtures/sns/notification_cloudwatch_alarm.json, with this file's JSON as its Message)",
            file.display()
        ),
        Err(e) => return Err(e.into()),
    };
    out!("{}", serde_json::to_string_pretty(&preview.events)?);
    if let Some(reason) = preview.ignored {
        match reason {
            IgnoreReason::NoRuleMatched => eprintln!("{reason}"),
            IgnoreReason::BySource(_) => eprintln!("ignored: {reason}"),
        }
    }
    Ok(())
}

/// A CloudWatch alarm (or its EventBridge form) rather than the SNS envelope around it.
fn looks_like_cloudwatch(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("Type").is_none() && (v.get("AlarmName").is_some() || v.get("detail-type").is_some()))
}

fn health(addr: std::net::SocketAddr) -> anyhow::Result<ExitCode> {
    use std::io::{Read, Write};
    let ip = if addr.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { addr.ip() };
    let timeout = std::time::Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&(ip, addr.port()).into(), timeout)
        .with_context(|| format!("connecting to the admin listener at {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.") && &head[9..12] == b"200" {
        out!("ready");
        Ok(ExitCode::SUCCESS)
    } else {
        out!("not ready: {}", String::from_utf8_lossy(&head));
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests;
