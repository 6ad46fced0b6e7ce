//! The whole API on localhost: embedded store, email and SMS printed and kept in an outbox.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match mfa_core::local::main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfa-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
