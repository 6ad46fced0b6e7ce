//! The words of every message, shared by all senders.

use super::{Channel, Message};
use crate::clock::Millis;

fn minutes(ttl: Millis) -> Millis {
    (ttl / 60_000).max(1)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn email(to: &str, subject: String, text: String) -> Message {
    let html = format!(
        "<!doctype html><html><body><p>{}</p></body></html>",
        escape(&text).replace("\n\n", "</p><p>").replace('\n', "<br>")
    );
    Message { channel: Channel::Email, to: to.to_string(), subject, text, html: Some(html) }
}

fn sms(to: &str, text: String) -> Message {
    Message { channel: Channel::Sms, to: to.to_string(), subject: String::new(), text, html: None }
}

pub fn email_verification(project: &str, to: &str, link: &str, ttl: Millis) -> Message {
    email(
        to,
        format!("{project}: verify your email"),
        format!(
            "Follow this link to verify your email address for {project}:\n{link}\n\n\
             The link expires in {} minutes. If you did not ask for this, ignore this email.",
            minutes(ttl)
        ),
    )
}

pub fn password_recovery(project: &str, to: &str, link: &str, ttl: Millis) -> Message {
    email(
        to,
        format!("{project}: reset your password"),
        format!(
            "Follow this link to choose a new password for {project}:\n{link}\n\n\
             The link expires in {} minutes and works once; every signed-in device will be signed out. \
             If you did not ask for this, ignore this email: your password stays as it is.",
            minutes(ttl)
        ),
    )
}

pub fn phone_verification(project: &str, to: &str, code: &str, ttl: Millis) -> Message {
    sms(to, format!("{code} is your {project} verification code. It expires in {} minutes.", minutes(ttl)))
}

pub fn email_challenge(project: &str, to: &str, code: &str, ttl: Millis) -> Message {
    email(
        to,
        format!("{project}: your sign-in code"),
        format!(
            "Your {project} sign-in code is {code}.\n\n\
             It expires in {} minutes and can be used once. If you did not try to sign in, \
             someone may know your password: change it.",
            minutes(ttl)
        ),
    )
}

pub fn sms_challenge(project: &str, to: &str, code: &str, ttl: Millis) -> Message {
    sms(to, format!("{code} is your {project} sign-in code. It expires in {} minutes.", minutes(ttl)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_messages_state_code_and_real_expiry() {
        let m = email_challenge("Demo", "a@b.co", "012345", 600_000);
        assert!(m.text.contains("012345") && m.text.contains("10 minutes"));
        assert!(m.html.as_deref().unwrap().contains("012345"));
        let s = sms_challenge("Demo", "+12065550100", "012345", 600_000);
        assert!(s.text.contains("012345") && s.text.contains("10 minutes"));
    }

    #[test]
    fn html_is_escaped() {
        let m = email_verification("<b>x</b>", "a@b.co", "https://e.co/?a=1&b=2", 3_600_000);
        let html = m.html.unwrap();
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"));
        assert!(html.contains("a=1&amp;b=2"));
    }
}
