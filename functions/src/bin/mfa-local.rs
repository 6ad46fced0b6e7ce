//! The whole API on localhost: embedded store, email and SMS printed and kept in an outbox.
//! `mfa-local setup` creates the DynamoDB table and SES identity for local emulators;
//! `mfa-local totp <BASE32 SECRET>` prints an authenticator's current code.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = match args.as_slice() {
        [cmd, secret] if cmd == "totp" => mfa_core::local::print_totp(secret),
        [cmd] if cmd == "setup" => mfa_core::local::setup().await,
        [] => mfa_core::local::main().await,
        _ => Err("usage: mfa-local | mfa-local setup | mfa-local totp <BASE32 SECRET>".into()),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mfa-local: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
