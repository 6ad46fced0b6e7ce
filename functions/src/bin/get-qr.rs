//! `GET /v1/avatars/qr`

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    mfa_core::lambda::serve(mfa_core::api::functions::get_qr()).await
}
