//! `mfa-local`: every route of the table on one HTTP listener, through the same handler
//! code as the Lambda functions, with the embedded store and the outbox.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use tokio::net::TcpListener;

use crate::api::{App, ClientIp};
use crate::backends::{Backends, SenderKind, StoreKind};
use crate::clock::{Clock, SystemClock};
use crate::config::{var, Config};
use crate::error::ApiError;
use crate::http::request::MAX_BODY;
use crate::http::Reply;

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
            table: "mfa".into(),
            email_from: "no-reply@example.com".into(),
            database: self.data_dir.join("mfa.redb"),
            outbox: self.outbox.clone(),
        }
        .from_env()
        .map_err(|e| e.to_string())
    }

    pub fn from_env() -> LocalSettings {
        let data_dir = PathBuf::from(var("MFA_DATA_DIR").unwrap_or_else(|| ".mfa".into()));
        LocalSettings {
            listen: var("MFA_LISTEN").unwrap_or_else(|| "127.0.0.1:8080".into()),
            outbox: var("MFA_OUTBOX").map(PathBuf::from).unwrap_or_else(|| data_dir.join("outbox.jsonl")),
            data_dir,
        }
    }
}

/// The server key kept in the data folder, made on first start.
fn local_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = data_dir.join("secret.key");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        if existing.trim().len() >= 32 {
            return Ok(existing.trim().as_bytes().to_vec());
        }
    }
    let secret = crate::domain::crypto::random_secret();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(&path)?, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// Builds the app from the environment and serves until the process is stopped.
pub async fn main() -> Result<(), String> {
    let settings = LocalSettings::from_env();
    std::fs::create_dir_all(&settings.data_dir)
        .map_err(|e| format!("cannot create data folder {}: {e}", settings.data_dir.display()))?;
    let secret = local_secret(&settings.data_dir).map_err(|e| format!("cannot keep the server key: {e}"))?;
    let config = Config::from_env(Some(secret)).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let backends = settings.backends()?;
    let (store, sender) = backends.build(clock.now()).await.map_err(|e| e.to_string())?;
    let project = config.project_id.clone();
    let app = Arc::new(App::new(config, store, sender, clock));

    let listener =
        TcpListener::bind(&settings.listen).await.map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("MFA API listening on http://{addr}/v1");
    println!("Project ID: {project}");
    match backends.store {
        StoreKind::Embedded => println!("Store: embedded, {}", backends.database.display()),
        StoreKind::DynamoDb => println!("Store: DynamoDB table {}", backends.table),
    }
    match backends.sender {
        SenderKind::Outbox => println!("Outbox: {}", backends.outbox.display()),
        SenderKind::Aws => println!("Sender: SES v2 / SNS, from {}", backends.email_from),
    }
    serve(app, listener).await;
    Ok(())
}

pub async fn serve(app: Arc<App>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&app, req, peer).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn handle(app: &App, req: hyper::Request<Incoming>, peer: SocketAddr) -> hyper::Response<Full<Bytes>> {
    let (mut parts, body) = req.into_parts();
    let response = match Limited::new(body, MAX_BODY + 1).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let body = if bytes.is_empty() { Body::Empty } else { Body::Binary(bytes.to_vec()) };
            parts.extensions.insert(ClientIp(peer.ip().to_string()));
            app.handle(lambda_http::Request::from_parts(parts, body), None).await
        }
        Err(_) => Reply::error(&ApiError::BodyTooLarge(MAX_BODY)).into_response(),
    };
    let (parts, body) = response.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(text) => Bytes::from(text),
        Body::Binary(bin) => Bytes::from(bin),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
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
