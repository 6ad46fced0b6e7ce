//! An Appwrite-compatible multi-factor authentication API: domain rules, storage,
//! delivery and the HTTP layer shared by every Lambda function and the local server.

pub mod api;
pub mod backends;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod hashing;
pub mod http;
pub mod logs;
pub mod store;

pub use api::{routes, App, Route};
pub mod lambda;
pub mod local;
