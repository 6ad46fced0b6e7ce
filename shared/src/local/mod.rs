//! `mfa-local`: every route of the table on one listener (`axum::serve`), through the same
//! Router and handler code as the Lambda functions, with the embedded store and the outbox.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{routes, App};
use crate::backends::{Backends, SenderKind, StoreKind};
use crate::clock::{Clock, SystemClock};
use crate::config::{var, Config};

pub mod cli;
mod conn;
mod keys;
pub mod page;
mod rotation;
pub mod server_keys;

/// Where mfa-local listens without `MFA_LISTEN`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Its data folder without `MFA_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = ".mfa";
/// The sender address of `MFA_SENDER=aws` without `MFA_EMAIL_FROM`.
pub const DEFAULT_EMAIL_FROM: &str = "no-reply@example.com";
/// The DynamoDB table of `MFA_STORE=dynamodb` without `MFA_TABLE`.
pub const DEFAULT_TABLE: &str = "mfa";

pub struct LocalSettings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub outbox: PathBuf,
}

impl LocalSettings {
    /// Embedded store and outbox unless `MFA_STORE` / `MFA_SENDER` say otherwise.
    pub fn backends(&self) -> Result<Backends, String> {
        Backends {
            store: StoreKind::Embedded,
            sender: SenderKind::Outbox,
            table: DEFAULT_TABLE.into(),
            email_from: DEFAULT_EMAIL_FROM.into(),
            database: self.data_dir.join("mfa.redb"),
            outbox: self.outbox.clone(),
        }
        .from_env()
        .map_err(|e| e.to_string())
    }

    pub fn from_env() -> LocalSettings {
        let data_dir = PathBuf::from(var("MFA_DATA_DIR").unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
        LocalSettings {
            listen: var("MFA_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into()),
            outbox: var("MFA_OUTBOX").map(PathBuf::from).unwrap_or_else(|| data_dir.join("outbox.jsonl")),
            data_dir,
        }
    }
}

/// Creates `dir` (and missing parents) readable by its owner only. A folder that exists is
/// left as it is: it may be one the user chose and shares.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Makes `path` a file only its owner can read and write: created so if missing, narrowed
/// if it exists (users, sessions and the server key are in these files).
pub(crate) fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(file)
}

/// Builds the app from the environment and serves until the process is stopped.
pub async fn main() -> Result<(), String> {
    crate::logs::init_readable();
    let settings = LocalSettings::from_env();
    create_private_dir(&settings.data_dir)
        .map_err(|e| format!("cannot create data folder {}: {e}", settings.data_dir.display()))?;
    let secret = server_keys::load(&settings.data_dir).map_err(|e| format!("cannot keep the server key: {e}"))?;
    let listener =
        TcpListener::bind(&settings.listen).await.map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut config = Config::from_env(Some(secret)).map_err(|e| e.to_string())?;
    if var("MFA_ALLOWED_ORIGINS").is_none() {
        // Pages this server itself would serve, wherever it listens.
        config.allowed_origins.push(format!("http://{addr}"));
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let backends = settings.backends()?;
    if backends.store == StoreKind::Embedded {
        // Before the database opens it, so it never exists readable by others.
        private_file(&backends.database)
            .map_err(|e| format!("cannot create the database {}: {e}", backends.database.display()))?;
    }
    let (store, sender) = backends.build(clock.now()).await.map_err(|e| e.to_string())?;
    let project = config.project_id.clone();
    let app = Arc::new(App::new(config, store, sender, clock));

    println!("MFA API listening on http://{addr}/v1");
    println!("Project ID: {project}");
    println!("Open {} in a browser to try every factor", page::address(addr));
    match backends.store {
        StoreKind::Embedded => println!("Store: embedded, {}", backends.database.display()),
        StoreKind::DynamoDb => println!("Store: DynamoDB table {}", backends.table),
    }
    match backends.sender {
        SenderKind::Outbox => println!("Outbox: {}", backends.outbox.display()),
        SenderKind::Aws => println!("Sender: SES v2 / SNS, from {}", backends.email_from),
    }
    serve(app, listener).await.map_err(|e| format!("server stopped: {e}"))
}

/// Serves every route, and the page at `/`, on `listener` until the process is stopped.
pub async fn serve(app: Arc<App>, listener: TcpListener) -> std::io::Result<()> {
    let page = page::router(&app.config.project_id);
    let router = page.merge(crate::http::router(app, routes())).layer(axum::middleware::from_fn(conn::track));
    axum::serve(conn::Listener(listener), router.into_make_service_with_connect_info::<conn::Peer>()).await
}

/// Prints the current code of an authenticator secret, for trying the flow without a phone.
pub fn print_totp(base32: &str) -> Result<(), String> {
    use crate::domain::totp;
    let secret = totp::from_base32(base32).ok_or("the secret is not valid base32")?;
    let code = totp::code_at(&secret, SystemClock.now()).ok_or("the secret is too short for TOTP")?;
    println!("{code}");
    Ok(())
}

/// `mfa-local setup`: creates the DynamoDB table (TTL on) and the SES sender identity that
/// `MFA_STORE=dynamodb` / `MFA_SENDER=aws` use, on DynamoDB Local and an emulator.
pub async fn setup() -> Result<(), String> {
    let backends = LocalSettings::from_env().backends()?;
    backends.prepare_aws().await?;
    println!("ready: table {} / sender {}", backends.table, backends.email_from);
    Ok(())
}
