//! The rules of the product: pure values and functions of plain inputs and a `now`.

pub mod authenticator;
pub mod budget;
pub mod challenge;
pub mod change;
pub mod crypto;
pub mod factor;
pub mod limits;
pub mod lookup;
pub mod password;
pub mod recovery;
pub mod session;
pub mod totp;
pub mod user;
pub mod values;
pub mod verification;
pub mod webauthn;

pub use authenticator::{Authenticator, AuthenticatorKind, AuthenticatorSecret};
pub use challenge::Challenge;
pub use factor::Factor;
pub use session::{Session, Standing};
pub use user::User;
pub use verification::{Channel, VerificationToken};
