//! The store's own settings, and opening it by them. The caller (`app`) builds them from
//! `[storage]`: the queue knows nothing of the config file.

use super::{Headroom, PostgresQueue, Queue, QueueError, Role, SqliteQueue};
use crate::secret::Secret;
use std::path::PathBuf;
use std::sync::Arc;

/// How to open the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub backend: Backend,
    pub durability: Durability,
    /// The room kept for delivery (SQLite: PostgreSQL's disk is the server's to watch; its
    /// disk-full errors shut the accepts all the same).
    pub headroom: Headroom,
}

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one delivering process).
    Sqlite { path: PathBuf },
    /// A PostgreSQL database shared by several replicas; the URL may carry a password.
    Postgres { url: Secret },
}

impl Backend {
    /// What an error opening it names: the file, or the setting (never the URL).
    pub fn name(&self) -> String {
        match self {
            Backend::Sqlite { path } => path.display().to_string(),
            Backend::Postgres { .. } => "the PostgreSQL store (storage.url)".to_string(),
        }
    }

    /// Which store this is, for the `ready` log line: the SQLite file, or PostgreSQL's hosts,
    /// ports and database, never the user or password the URL may carry.
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite { path } => format!("SQLite {}", path.display()),
            Backend::Postgres { url } => match url.expose().parse::<tokio_postgres::Config>() {
                Ok(pg) => {
                    let ports = pg.get_ports();
                    let hosts: Vec<String> = pg
                        .get_hosts()
                        .iter()
                        .enumerate()
                        .map(|(i, h)| {
                            let host = match h {
                                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                                #[cfg(unix)]
                                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                            };
                            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                            format!("{host}:{port}")
                        })
                        .collect();
                    format!("PostgreSQL {}/{}", hosts.join(","), pg.get_dbname().unwrap_or(""))
                }
                Err(_) => "PostgreSQL (storage.url)".to_string(),
            },
        }
    }
}

/// How hard an accept's commit tries to reach the disk before it is answered (SQLite; a
/// PostgreSQL commit is as durable as the server is set to make it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced before the answer: survives a power loss.
    Fsync,
    /// Written to the WAL without a sync: survives a crash of the process, not of the machine.
    Process,
}

/// An opened store.
pub struct Opened {
    /// Routing keys' pace is kept in it too, and shared by the replicas on PostgreSQL.
    pub store: Arc<dyn Queue>,
}

/// Opens the store `settings` name, as the deliverer (`serve`) or as a tool beside it.
pub async fn open(settings: &Settings, role: Role) -> Result<Opened, QueueError> {
    match &settings.backend {
        Backend::Sqlite { path } => {
            let store = Arc::new(SqliteQueue::open_with(path, settings.durability, role, settings.headroom)?);
            Ok(Opened { store })
        }
        // Every role is the same here: other replicas' leases are theirs until they expire.
        Backend::Postgres { url } => {
            let store = Arc::new(PostgresQueue::connect(url).await?);
            Ok(Opened { store })
        }
    }
}
