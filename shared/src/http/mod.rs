//! The HTTP edge: one axum Router from the route table (`router`), the extractors a request's
//! context is built from (`extract`), replies and Appwrite error bodies, cookies, CORS,
//! request ids and one log span per request.

pub mod extract;
pub mod params;
pub mod request;
pub mod response;
mod router;

pub use request::{Authed, Credentials, Ctx};
pub use response::Reply;
pub use router::{router, REQUEST_ID};
