//! The whole API on localhost: embedded store, email and SMS printed and kept in an outbox.
//! `mfa-local --help` lists its commands and the environment it reads.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    mfa_core::local::cli::run().await
}
