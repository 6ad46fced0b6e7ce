//! Which store and which sender a process uses, chosen once at start from the environment:
//! `MFA_STORE=embedded|dynamodb` (+ `MFA_TABLE`), `MFA_SENDER=outbox|aws` (+ `MFA_EMAIL_FROM`).
//! AWS endpoints come from the SDK's own variables (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, ...), so the same binaries reach DynamoDB Local, an emulator
//! or AWS.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

use crate::clock::Millis;
use crate::config::{var, ConfigError};
use crate::delivery::aws::AwsSender;
use crate::delivery::outbox::Outbox;
use crate::delivery::Sender;
use crate::store::dynamo::DynamoStore;
use crate::store::embedded::EmbeddedStore;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    DynamoDb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind {
    Outbox,
    Aws,
}

/// What a process runs on; `Backends::from_env` fills in what the environment says.
pub struct Backends {
    pub store: StoreKind,
    pub sender: SenderKind,
    pub table: String,
    pub email_from: String,
    /// Embedded database file and outbox file, for the local kinds.
    pub database: PathBuf,
    pub outbox: PathBuf,
}

impl Backends {
    pub fn from_env(mut self) -> Result<Backends, ConfigError> {
        self.store = match var("MFA_STORE").as_deref() {
            None => self.store,
            Some("embedded") => StoreKind::Embedded,
            Some("dynamodb") => StoreKind::DynamoDb,
            Some(other) => return Err(ConfigError(format!("MFA_STORE must be embedded or dynamodb, got {other:?}"))),
        };
        self.sender = match var("MFA_SENDER").as_deref() {
            None => self.sender,
            Some("outbox") => SenderKind::Outbox,
            Some("aws") => SenderKind::Aws,
            Some(other) => return Err(ConfigError(format!("MFA_SENDER must be outbox or aws, got {other:?}"))),
        };
        if let Some(table) = var("MFA_TABLE") {
            self.table = table;
        }
        if let Some(from) = var("MFA_EMAIL_FROM") {
            self.email_from = from;
        }
        if self.sender == SenderKind::Aws && !self.email_from.contains('@') {
            return Err(ConfigError("MFA_EMAIL_FROM must be the sender's email address".into()));
        }
        Ok(self)
    }

    fn uses_aws(&self) -> bool {
        self.store == StoreKind::DynamoDb || self.sender == SenderKind::Aws
    }

    /// Builds the store and sender (AWS clients once, here).
    pub async fn build(&self, now: Millis) -> Result<(Arc<dyn Store>, Arc<dyn Sender>), ConfigError> {
        let aws = if self.uses_aws() { Some(aws_config().await) } else { None };
        let store: Arc<dyn Store> = match (self.store, &aws) {
            (StoreKind::DynamoDb, Some(aws)) => {
                Arc::new(DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), self.table.clone()))
            }
            _ => Arc::new(EmbeddedStore::open(&self.database, now).map_err(|e| ConfigError(e.to_string()))?),
        };
        let sender: Arc<dyn Sender> = match (self.sender, &aws) {
            (SenderKind::Aws, Some(aws)) => Arc::new(AwsSender::new(aws, self.email_from.clone())),
            _ => Arc::new(Outbox::new(self.outbox.clone())),
        };
        Ok((store, sender))
    }

    /// DynamoDB and SES v2 / SNS only: what a Lambda function runs on. Unlike [`Self::build`]
    /// it does not reach the embedded database or the outbox, so neither is linked into the
    /// Lambda bootstraps (redb alone is about 0.4 MB of each).
    pub async fn build_aws(&self) -> Result<(Arc<dyn Store>, Arc<dyn Sender>), ConfigError> {
        if self.store != StoreKind::DynamoDb || self.sender != SenderKind::Aws {
            return Err(ConfigError("only MFA_STORE=dynamodb with MFA_SENDER=aws is built here".into()));
        }
        let aws = aws_config().await;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), self.table.clone());
        Ok((Arc::new(store), Arc::new(AwsSender::new(&aws, self.email_from.clone()))))
    }

    /// Creates the DynamoDB table (with TTL) and the SES sender identity, where these
    /// backends use them: for DynamoDB Local and emulators; on AWS the template does it.
    pub async fn prepare_aws(&self) -> Result<(), String> {
        let aws = aws_config().await;
        if self.store == StoreKind::DynamoDb {
            crate::store::dynamo::create_table(&aws_sdk_dynamodb::Client::new(&aws), &self.table)
                .await
                .map_err(|e| e.to_string())?;
        }
        if self.sender == SenderKind::Aws {
            crate::delivery::ses::ensure_email_identity(&aws, &self.email_from).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

/// One SDK configuration per process, with timeouts so a stalled dependency fails fast, and
/// one HTTPS client for every AWS client: rustls on ring (the SDK's default client would
/// link aws-lc-rs, about 1 MB more in every Lambda bootstrap).
async fn aws_config() -> SdkConfig {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let https = aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    aws_config::defaults(BehaviorVersion::latest()).http_client(https).timeout_config(aws_timeouts()).load().await
}

/// How long an AWS call may take: a stalled dependency answers 503 within
/// `operation_timeout`, never holds a request (or a Lambda invocation) open.
pub fn aws_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build()
}
