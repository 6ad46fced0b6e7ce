//! Every Lambda function in one bootstrap: `MFA_FUNCTION` (set per function in template.yaml)
//! names the function, and only its routes are served.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve_function_from_env().await
}
