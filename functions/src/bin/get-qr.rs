//! `GET /v1/avatars/qr`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve("get-qr").await
}
