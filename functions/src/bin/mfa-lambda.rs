//! Every Lambda function in one bootstrap: `MFA_FUNCTION` (set per function in template.yaml)
//! names the function, and only its routes are served.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let name = std::env::var("MFA_FUNCTION").map_err(|_| "MFA_FUNCTION is not set: it names the function to serve")?;
    mfa_core::lambda::serve_named(&name).await
}
