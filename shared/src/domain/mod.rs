//! The rules of the product: pure values and functions of plain inputs and a `now`.

pub mod challenge;
pub mod crypto;
pub mod limits;
pub mod password;
pub mod recovery;
pub mod session;
pub mod totp;
pub mod user;
pub mod values;
pub mod verification;

pub use challenge::Challenge;
pub use session::{Session, Standing};
pub use user::{Authenticator, Factors, User};
pub use values::Factor;
pub use verification::{Channel, VerificationToken};
