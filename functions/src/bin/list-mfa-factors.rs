//! `GET /v1/account/mfa/factors`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("list-mfa-factors").await
}
