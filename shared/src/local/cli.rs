//! The `mfa-local` command line. Without a command it serves; configuration comes from the
//! environment (listed by `--help`), the same variables the Lambda functions read.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::clock::SECOND;

#[derive(Debug, Parser)]
#[command(
    name = "mfa-local",
    version,
    about = "The Appwrite-compatible MFA API on this machine: every endpoint on one listener, an \
             embedded database, email and SMS printed on stdout and kept in an outbox file.",
    after_help = "Logs go to stderr; stdout shows the server's address and every message it sends."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API (what mfa-local does without a command).
    Serve,
    /// Create the DynamoDB table (with TTL) and the SES sender identity that MFA_STORE=dynamodb
    /// and MFA_SENDER=aws use, on DynamoDB Local and emulators (AWS_ENDPOINT_URL...).
    Setup,
    /// API keys of the server API (`X-Appwrite-Key`, in the store MFA_STORE names; on the
    /// embedded store, run it while mfa-local is not serving the same data folder), and the
    /// server keys (rotate, see what each still protects, retire an old one).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Print the current code of an authenticator secret, to try the flow without a phone.
    Totp {
        /// The authenticator's secret in base32, as POST /v1/account/mfa/authenticators/totp
        /// answers it.
        #[arg(value_name = "SECRET")]
        secret: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key; its secret is printed once and only its hash is stored.
    Create {
        /// A name that says who or what uses the key.
        #[arg(long)]
        name: String,
        /// What the key may do, comma list: users.read, users.write.
        #[arg(long, value_name = "SCOPES")]
        scopes: String,
    },
    /// List the keys: id, name, scopes, creation time (never a secret).
    List,
    /// Revoke (delete) a key by id: it stops working at once.
    Revoke {
        #[arg(value_name = "ID")]
        id: String,
    },
    /// Add a server key to the data folder's ring; new values use it from the next start.
    Rotate,
    /// How many stored values each server key still protects (scans the store).
    Usage,
    /// Remove an older server key, refused while any stored value still depends on it.
    Retire {
        #[arg(value_name = "KEY_ID")]
        id: String,
    },
}

/// Every environment variable mfa-local reads: name, default, meaning.
fn environment() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("MFA_LISTEN", super::DEFAULT_LISTEN.into(), "address to serve on"),
        ("MFA_DATA_DIR", super::DEFAULT_DATA_DIR.into(), "data folder: embedded database, server key (owner-only)"),
        ("MFA_OUTBOX", "<MFA_DATA_DIR>/outbox.jsonl".into(), "file every email and SMS is appended to, as JSON lines"),
        ("MFA_PROJECT_ID", "local".into(), "the project id apps pass to setProject"),
        ("MFA_PROJECT_NAME", "the project id".into(), "name shown in authenticator apps and messages"),
        ("MFA_SECRET_KEY", "generated into <MFA_DATA_DIR>/secret.key".into(), "server key, 32+ characters"),
        (
            "MFA_SECRET_KEYS",
            "<MFA_DATA_DIR>/server-keys after a rotation".into(),
            "server keys, id=secret comma list, the active one first (keys rotate)",
        ),
        (
            "MFA_ALLOWED_ORIGINS",
            format!("{}, and this server's own origin", crate::config::LOCAL_ORIGINS.replace(',', ", ")),
            "browser origins allowed with credentials, comma list; host:* is any port, * any origin",
        ),
        ("MFA_REDIRECT_HOSTS", "*".into(), "hosts verification links may point to, comma list; * for any"),
        (
            "MFA_SESSION_TTL_SECONDS",
            (crate::config::SESSION_TTL / SECOND).to_string() + " (365 days)",
            "how long a session lasts",
        ),
        (
            "MFA_CHALLENGE_TTL_SECONDS",
            (crate::domain::challenge::CHALLENGE_TTL / SECOND).to_string(),
            "how long an MFA challenge's code is valid",
        ),
        (
            "MFA_WEBAUTHN_RP_ID",
            crate::config::LOCAL_RP_ID.into(),
            "WebAuthn relying party id: a domain, never an IP (open the page on localhost)",
        ),
        ("MFA_WEBAUTHN_RP_NAME", "the project name".into(), "name browsers show when a security key is used"),
        (
            "MFA_WEBAUTHN_ORIGINS",
            crate::config::LOCAL_WEBAUTHN_ORIGIN.to_string() + " (any port on localhost)",
            "page origins allowed to use security keys, comma list",
        ),
        ("MFA_LOG_TTL_DAYS", "90".into(), "how long activity log events are kept"),
        ("MFA_STORE", "embedded".into(), "embedded | dynamodb"),
        ("MFA_TABLE", super::DEFAULT_TABLE.into(), "the DynamoDB table, with MFA_STORE=dynamodb"),
        ("MFA_SENDER", "outbox".into(), "outbox | aws (SES v2 for email, SNS for SMS)"),
        ("MFA_EMAIL_FROM", super::DEFAULT_EMAIL_FROM.into(), "the sender address, with MFA_SENDER=aws"),
        ("RUST_LOG", "info".into(), "log filter, e.g. info,mfa_core=debug (logs go to stderr)"),
    ]
}

fn environment_help() -> String {
    let width = environment().iter().map(|(name, _, _)| name.len()).max().unwrap_or(0);
    let mut help = String::from("Environment (default in brackets):\n");
    for (name, default, meaning) in environment() {
        help.push_str(&format!("  {name:width$}  {meaning} [{default}]\n"));
    }
    help.push_str(
        "AWS endpoints, region and credentials come from the AWS SDK's own variables \
         (AWS_ENDPOINT_URL, AWS_REGION, ...).",
    );
    help
}

/// Parses the command line and runs what it asks.
pub async fn run() -> ExitCode {
    let command = Cli::command().after_long_help(environment_help()).after_help(environment_help());
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => super::main().await,
        Command::Setup => super::setup().await,
        Command::Totp { secret } => super::print_totp(&secret),
        Command::Keys { action } => match action {
            KeysCommand::Create { name, scopes } => super::keys::create(&name, &scopes).await,
            KeysCommand::List => super::keys::list().await,
            KeysCommand::Revoke { id } => super::keys::revoke(&id).await,
            KeysCommand::Rotate => super::rotation::rotate(),
            KeysCommand::Usage => super::rotation::usage().await,
            KeysCommand::Retire { id } => super::rotation::retire(&id).await,
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfa-local: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every variable the crate's source reads (with `var`) is listed by `--help`.
    #[test]
    fn help_names_every_variable_the_code_reads() {
        let listed: Vec<_> = environment().into_iter().map(|(name, _, _)| name).collect();
        let mut dirs = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
        let mut read = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let source = std::fs::read_to_string(&path).unwrap();
                    for piece in source.split("var(\"").skip(1) {
                        let name = piece.split('"').next().unwrap().to_string();
                        read.push((name, path.display().to_string()));
                    }
                }
            }
        }
        assert!(read.iter().any(|(name, _)| name == "MFA_LISTEN"), "the scan finds the variables");
        for (name, file) in read {
            assert!(listed.contains(&name.as_str()), "{name} (read in {file}) is missing from --help");
        }
    }
}
