//! The only code that knows actix-web: routes, extractors, and the one place that chooses
//! HTTP status codes ([`error`]).

mod admin;
mod error;
mod hooks;
mod incidents;

use crate::config::ServerConfig;
use crate::ingest::Pipeline;
use crate::queue::Queue;
use actix_web::dev::ServerHandle;
use actix_web::http::KeepAlive;
use actix_web::{middleware, web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;

/// State shared by the admin routes.
#[derive(Clone)]
pub struct AdminState {
    pub queue: Arc<dyn Queue>,
    /// For replaying dead letters through the current mappings.
    pub pipeline: Pipeline,
    /// The digest of `server.admin_token`, compared with the digest of the presented one.
    pub admin_token: Option<crate::secret::SecretDigest>,
    /// Not ready once shutdown has begun or a background task is down: `/readyz` answers 503.
    pub health: Arc<crate::supervise::Health>,
    /// `serve --dry-run`: the console says that nothing is sent.
    pub dry_run: bool,
}

/// The two HTTP servers, bound and running: how to stop them.
pub struct Servers {
    pub hooks: ServerHandle,
    pub admin: ServerHandle,
}

/// The tasks running the two servers, which end when they stop (for `app` to watch).
pub struct ServerTasks {
    pub hooks: tokio::task::JoinHandle<std::io::Result<()>>,
    pub admin: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// How much of a client the webhook handler accepts: body size and time.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The body must arrive within this of its headers.
    pub timeout: std::time::Duration,
}

/// Reads the body within the time and size limits: a client trickling bytes is answered 408
/// and its connection closed instead of holding it forever.
async fn read_body(payload: web::Payload, limits: &BodyLimits) -> Result<web::Bytes, error::BodyError> {
    match tokio::time::timeout(limits.timeout, payload.to_bytes_limited(limits.max_bytes)).await {
        Err(_) => Err(error::BodyError::Timeout(limits.timeout)),
        Ok(Err(_)) => Err(error::BodyError::TooLarge(limits.max_bytes)),
        Ok(Ok(Err(e))) => Err(error::BodyError::Broken(e.to_string())),
        Ok(Ok(Ok(bytes))) => Ok(bytes),
    }
}

/// The names the admin listener answers to besides IP literals and `localhost`
/// (`server.admin_hosts`).
#[derive(Debug, Clone)]
struct AdminHosts(Vec<String>);

/// Starts the webhook listener and the admin listener on already-bound sockets.
pub fn start(
    pipeline: Pipeline,
    server: &ServerConfig,
    hooks: TcpListener,
    admin: AdminState,
    admin_listener: TcpListener,
) -> std::io::Result<(Servers, ServerTasks)> {
    let pipeline = web::Data::new(pipeline);
    let limits = web::Data::new(BodyLimits { max_bytes: server.max_body_bytes, timeout: server.request_timeout });
    let keep_alive =
        if server.keep_alive.is_zero() { KeepAlive::Disabled } else { KeepAlive::Timeout(server.keep_alive) };
    let hooks_server = HttpServer::new(move || {
        App::new()
            .app_data(pipeline.clone())
            .app_data(limits.clone())
            .route("/hooks/{source}", web::post().to(hooks::post_hook))
            .route("/hooks/{source}", web::to(error::method_not_allowed))
            .default_service(web::to(error::not_found))
    })
    .workers(server.workers)
    // The headers of a connection's first request; bodies are timed by the handler.
    .client_request_timeout(server.request_timeout)
    .keep_alive(keep_alive)
    .max_connections(server.max_connections)
    .disable_signals()
    .shutdown_timeout(30)
    .listen(hooks)?
    .run();
    let admin_server = admin_server(server, admin, admin_listener)?;
    let servers = Servers { hooks: hooks_server.handle(), admin: admin_server.handle() };
    Ok((servers, ServerTasks { hooks: tokio::spawn(hooks_server), admin: tokio::spawn(admin_server) }))
}

/// The admin listener, running on `listener`: one worker, since everything heavy it does
/// (a render, a replay's mapping) runs on `ingest::Cpu`'s pool.
fn admin_server(
    server: &ServerConfig,
    admin: AdminState,
    listener: TcpListener,
) -> std::io::Result<actix_web::dev::Server> {
    let admin_data = web::Data::new(admin);
    // The playground's payload arrives as a JSON string, escaped: room for that.
    let admin_limits =
        web::Data::new(BodyLimits { max_bytes: 4 * server.max_body_bytes, timeout: server.request_timeout });
    let admin_hosts = web::Data::new(AdminHosts(server.admin_hosts.clone()));
    let running = HttpServer::new(move || {
        App::new()
            .app_data(admin_data.clone())
            .app_data(admin_limits.clone())
            .app_data(admin_hosts.clone())
            .wrap(middleware::from_fn(admin::only_own_names))
            // Outermost, so refusals get them too: an admin answer is never a page a browser
            // may guess the type of, nor one a cache may keep (it holds payloads).
            .wrap(
                middleware::DefaultHeaders::new()
                    .add(("x-content-type-options", "nosniff"))
                    .add(("cache-control", "no-store")),
            )
            .route("/healthz", web::get().to(admin::healthz))
            .route("/readyz", web::get().to(admin::readyz))
            .route("/metrics", web::get().to(admin::metrics))
            .route("/", web::get().to(admin::console))
            .route("/console/{file}", web::get().to(admin::console_asset))
            .route("/admin/deliveries", web::get().to(admin::deliveries))
            .route("/admin/deliveries/{id}", web::get().to(admin::delivery))
            .route("/admin/stats", web::get().to(admin::stats))
            .route("/admin/sources", web::get().to(admin::sources))
            .route("/admin/render", web::post().to(admin::render))
            .route("/admin/incidents", web::get().to(incidents::incidents))
            .route("/admin/incidents/resolve", web::post().to(incidents::resolve))
            .route("/admin/dead", web::get().to(admin::dead_letters))
            .route("/admin/dead/replay", web::post().to(admin::replay_all))
            .route("/admin/dead/{id}", web::get().to(admin::dead_letter))
            .route("/admin/dead/{id}", web::delete().to(admin::delete_dead_letter))
            .route("/admin/dead/{id}/replay", web::post().to(admin::replay))
            .default_service(web::to(error::admin_not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5)
    .listen(listener)?
    .run();
    Ok(running)
}
