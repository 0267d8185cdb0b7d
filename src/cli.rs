//! The command line: `serve`, `check`, `render`, `health`, `deliveries list`, `dlq`.
//!
//! `deliveries` and `dlq` open the store directly (beside a running server, or without one),
//! so they work when the service is down, which is when they are needed most.

use crate::app::{self, App, Options};
use crate::config::Config;
use crate::ingest::{Pipeline, Replayed};
use crate::queue::{DeadId, Role};
use crate::reload::Live;
use crate::source::{Headers, Sources};
use crate::telemetry::{self, LogFormat};
use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

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
        /// Log each event instead of sending it (and record it as delivered).
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config and compile every mapping; exit 1 on any error.
    Check,
    /// Print the events a payload file would produce; sends nothing.
    Render {
        /// Source whose mappings to use.
        #[arg(long)]
        source: String,
        /// Request header, e.g. -H 'X-GitHub-Event: pull_request' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Payload file (the request body).
        file: PathBuf,
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
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    Ok(Config::load(&cli.config, &Config::process_env)?)
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Serve { dry_run } => {
            let cfg = load(&cli)?;
            let app = App::start(cfg, Options { dry_run: *dry_run, ..Options::default() }).await?;
            app.run_until_signal().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check => check(&cli),
        Command::Dlq { command } => dlq(&cli, command).await,
        Command::Health => {
            let cfg = load(&cli)?;
            health(cfg.server.admin_listen)
        }
        Command::Render { source, headers, file } => {
            render(&cli, source, headers, file)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Deliveries { command: DeliveriesCommand::List { limit, json } } => {
            let cfg = load(&cli)?;
            let rows = app::open_queue(&cfg, Role::Tool).await?.recent(*limit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:>8}  {:<8} {:<14} {:<7} {:<11} {:>3}  DEDUP_KEY / LAST ERROR",
                    "ID", "STATE", "SOURCE", "KIND", "ACTION", "TRY"
                );
                for r in rows {
                    let tail = match (&r.dedup_key, &r.last_error) {
                        (k, Some(e)) if r.state != "delivered" => format!("{} / {e}", k.as_deref().unwrap_or("-")),
                        (k, _) => k.clone().unwrap_or_else(|| "-".into()),
                    };
                    println!(
                        "{:>8}  {:<8} {:<14} {:<7} {:<11} {:>3}  {}",
                        r.id,
                        r.state,
                        r.source,
                        r.kind,
                        r.action.as_deref().unwrap_or("-"),
                        r.attempts,
                        tail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn dlq(cli: &Cli, command: &DlqCommand) -> anyhow::Result<ExitCode> {
    let cfg = load(cli)?;
    let queue = app::open_queue(&cfg, Role::Tool).await?;
    let parse =
        |id: &str| DeadId::parse(id).with_context(|| format!("{id:?} is not a dead-letter id (see `dlq list`)"));
    match command {
        DlqCommand::List { source, limit, json } => {
            let rows = queue.dead_letters(source.clone(), *limit).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<36}  {:<14} {:<14} {:<8} {:>3}  DEDUP_KEY / REASON", "ID", "KIND", "SOURCE", "ACTION", "TRY");
            for r in &rows {
                println!(
                    "{:<36}  {:<14} {:<14} {:<8} {:>3}  {} / {}",
                    r.id,
                    r.kind,
                    r.source,
                    r.action.as_deref().unwrap_or("-"),
                    r.attempts,
                    r.dedup_key.as_deref().unwrap_or("-"),
                    r.reason
                );
            }
            eprintln!("{} dead letter(s)", rows.len());
        }
        DlqCommand::Show { id } => match queue.dead_letter(parse(id)?).await? {
            Some(d) => println!("{}", serde_json::to_string_pretty(&d)?),
            None => bail!("no dead letter {id}"),
        },
        DlqCommand::Delete { id } => {
            if !queue.delete_dead(parse(id)?).await? {
                bail!("no dead letter {id}");
            }
            println!("deleted {id}");
        }
        DlqCommand::Replay { id, source, .. } => {
            // Replay maps with the mappings on disk now, which is the point: fix, then replay.
            let (sources, _) = Sources::build(&cfg).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
            let pipeline = Pipeline {
                sources: Arc::new(Live::new(sources)),
                metrics: Default::default(),
                queue,
                wake: Default::default(),
                cpu: crate::ingest::Cpu::new(1),
            };
            let results = match id {
                Some(id) => vec![(id.clone(), pipeline.replay(&parse(id)?).await)],
                None => pipeline.replay_all(source.as_deref()).await?,
            };
            let mut failed = 0;
            for (id, r) in results {
                match r {
                    Ok(Replayed::Requeued { event_id }) => println!("{id}: queued again as event {event_id}"),
                    Ok(Replayed::Remapped { events }) => println!("{id}: mapped into {events} event(s), queued"),
                    Ok(Replayed::Ignored { reason }) => println!("{id}: mapped to nothing ({reason})"),
                    Ok(Replayed::StillFailing { error }) => {
                        failed += 1;
                        println!("{id}: still not mapped: {error}");
                    }
                    Err(e) => {
                        failed += 1;
                        println!("{id}: {e}");
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn check(cli: &Cli) -> anyhow::Result<ExitCode> {
    let cfg = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (sources, warnings) = match Sources::build(&cfg) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", cfg.path.display(), errors.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in cfg.warnings.iter().chain(&warnings) {
        eprintln!("warning: {w}");
    }
    let mut names: Vec<_> = sources.names().collect();
    names.sort();
    for n in names {
        let s = sources.get(n).expect("listed");
        println!("source '{n}': {} rule(s) compiled", s.mapping().rule_count());
    }
    println!("{}: OK", cfg.path.display());
    Ok(ExitCode::SUCCESS)
}

fn render(cli: &Cli, source: &str, headers: &[String], file: &PathBuf) -> anyhow::Result<()> {
    let cfg = load(cli)?;
    let (sources, _) = Sources::build(&cfg).map_err(|e| anyhow::anyhow!("{}", e.join("\n")))?;
    let Some(src) = sources.get(source) else {
        bail!("no source named '{source}' in {}", cfg.path.display());
    };
    let mut pairs = Vec::new();
    for h in headers {
        let Some((k, v)) = h.split_once(':') else { bail!("header {h:?} is not 'Name: value'") };
        pairs.push((k.trim().to_string(), v.trim().to_string()));
    }
    if !pairs.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
        pairs.push(("content-type".into(), "application/json".into()));
    }
    let body = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let verified = src.trusted(Headers::from_pairs(pairs), "", body.into())?;
    let rendered = match verified.disposition() {
        crate::source::Disposition::Ignore(reason) => {
            eprintln!("ignored: {reason}");
            Vec::new()
        }
        crate::source::Disposition::Map => src.mapping().apply(verified, src.max_events_per_request())?,
    };
    let out: Vec<_> = rendered
        .iter()
        .map(|r| {
            serde_json::json!({
                "rule": r.rule,
                "endpoint": r.event.kind().path(),
                "routing_key": format!("sha256:{}…", r.event.routing_key().fingerprint()),
                "event": r.event.body(),
                "notes": r.event.notes(),
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&out)?);
    if rendered.is_empty() {
        eprintln!("no rule matched");
    }
    Ok(())
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
        println!("ready");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("not ready: {}", String::from_utf8_lossy(&head));
        Ok(ExitCode::FAILURE)
    }
}
