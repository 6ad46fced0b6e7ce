//! `GET /avatars/qr`: a PNG QR code, e.g. of a TOTP URI.

use image::{GrayImage, ImageEncoder, Luma};
use qrcode::{Color, QrCode};
use serde::Deserialize;

use super::budget::{Budget, Charged};
use super::App;
use crate::domain::limits::QR_PER_IP;
use crate::error::ApiError;
use crate::http::{Ctx, Reply};
use crate::store::Lookup;

/// The query of `GET /avatars/qr`; its numbers and flag come as text.
#[derive(Deserialize)]
struct QrQuery {
    text: String,
    size: Option<String>,
    margin: Option<String>,
    download: Option<String>,
}

fn int(name: &str, raw: Option<&str>, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(raw) => raw.parse::<u32>().ok().filter(|v| range.contains(v)).ok_or_else(|| {
            ApiError::invalid(
                name,
                &format!("Value must be a valid range between {} and {}", range.start(), range.end()),
            )
        }),
    }
}

/// One QR code renders at a time, on a blocking thread: the async threads stay free for
/// every other request.
static RENDERING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Longest text, in bytes: Appwrite's 512 characters, of which a QR code's cost depends on
/// the bytes (512 emoji are 2 KiB).
const MAX_TEXT_BYTES: usize = 1024;

pub async fn qr(app: &App, ctx: &mut Ctx) -> Result<Reply, ApiError> {
    let query: QrQuery = ctx.params()?;
    let text = query.text;
    if text.is_empty() || text.chars().count() > 512 || text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::invalid(
            "text",
            "Value must be a valid string and at least 1 chars and no longer than 512 chars (1024 bytes)",
        ));
    }
    let size = int("size", query.size.as_deref(), 400, 1..=1000)?;
    let margin = int("margin", query.margin.as_deref(), 1, 0..=10)?;
    // Appwrite reads `download` loosely: `true`, `1` and friends.
    let download = matches!(query.download.as_deref(), Some("true" | "1" | "yes" | "on"));
    let mut budget = Budget::default().every(QR_PER_IP, &ctx.ip);
    app.load(ctx, Lookup { counters: budget.counters(ctx.now), ..Lookup::default() }, false).await?;
    budget.check_in(ctx)?;
    let counted = app.store.count(&budget.success(ctx.now).into()).await?;
    budget.counted(counted, ctx.now)?;
    let png = {
        let _turn = RENDERING.acquire().await.map_err(|e| ApiError::Internal(Box::new(e)))?;
        tokio::task::spawn_blocking(move || render(&text, size, margin))
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))??
    };
    let reply = Reply::bytes("image/png", png).header("Cache-Control", "private, max-age=3888000");
    Ok(if download { reply.header("Content-Disposition", "attachment; filename=\"qr.png\"") } else { reply })
}

/// Renders `text` as a `size` x `size` PNG with a quiet zone of `margin` modules.
pub fn render(text: &str, size: u32, margin: u32) -> Result<Vec<u8>, ApiError> {
    let code = QrCode::new(text.as_bytes()).map_err(|e| ApiError::invalid("text", &e.to_string()))?;
    let width = code.width() as u32;
    let colors = code.to_colors();
    let total = width + 2 * margin;
    let image = GrayImage::from_fn(size, size, |x, y| {
        let (mx, my) = (x * total / size, y * total / size);
        let dark = mx >= margin
            && my >= margin
            && mx < margin + width
            && my < margin + width
            && colors[((my - margin) * width + (mx - margin)) as usize] == Color::Dark;
        Luma([if dark { 0 } else { 255 }])
    });
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(image.as_raw(), size, size, image::ExtendedColorType::L8)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_png_of_the_requested_size() {
        let png = render("otpauth://totp/x?secret=ABC", 200, 1).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (200, 200));
        let gray = img.to_luma8();
        assert!(gray.pixels().any(|p| p.0[0] == 0) && gray.pixels().any(|p| p.0[0] == 255));
    }
}
