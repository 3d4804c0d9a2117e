//! QR codes at the edge: reading the `otpauth://totp/` URI out of a PNG or JPEG screenshot
//! (capture from a QR, issue #19), and drawing a generated seed's URI as SVG or terminal
//! blocks (generate and show once).
//!
//! Decoding is bounded before any work is done: bytes first ([`MAX_IMAGE_BYTES`]), then the
//! dimensions read from the header alone ([`MAX_PIXELS`], so a small PNG declaring a huge
//! canvas — a decompression bomb — is refused before a pixel is inflated), then the decoder's
//! own allocation limit, and the caller's deadline ([`decode_with_deadline`]). The image, the
//! grey pixels and the decoded text are zeroized when dropped: a QR of a seed is the seed.
//! Errors say what to do (crop, zoom, which Microsoft option to choose), never the URI.

use std::io::Cursor;
use std::time::Duration;

use image::{
    DynamicImage, GenericImage, GenericImageView, ImageFormat, ImageReader, Limits, Luma, Pixel,
};
use zeroize::{Zeroize, Zeroizing};

/// Largest image accepted, in bytes: a full-screen 4K PNG screenshot is 2–6 MiB.
pub const MAX_IMAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest image accepted, in pixels (width × height): 8K (7680 × 4320) is 33 million.
pub const MAX_PIXELS: u64 = 40_000_000;
/// Longest a decode may take before the request is answered with [`QrError::TimedOut`].
pub const DECODE_DEADLINE: Duration = Duration::from_secs(10);

/// Why an image did not yield a TOTP URI. Every message starts with the field, `qr_image`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QrError {
    #[error("qr_image: the image is empty — choose a PNG or JPEG file, or paste a screenshot")]
    Empty,
    #[error("qr_image: the image is {bytes} bytes, more than the {limit} accepted — crop the screenshot to the QR code")]
    TooManyBytes { bytes: usize, limit: usize },
    #[error("qr_image: the image is {width}×{height} pixels, more than {limit} million — crop the screenshot to the QR code or scale it down")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("qr_image: this is {0}, not a PNG or JPEG image — take a screenshot of the QR code (PNG) or save it as PNG or JPEG")]
    NotAnImage(&'static str),
    #[error("qr_image: the {0} image is damaged or cut short — take the screenshot again or save the file again")]
    Damaged(&'static str),
    #[error("qr_image: no QR code found in the image — crop or zoom so that the QR code fills more of the picture, sharp and whole")]
    NoQr,
    #[error("qr_image: the image holds {0} QR codes — crop it to the one QR code of this token")]
    SeveralQrs(usize),
    #[error("qr_image: a QR code was found but cannot be read — take a larger, sharper screenshot with the whole QR code in it")]
    Unreadable,
    #[error("qr_image: this is Microsoft Authenticator's default \"phonefactor\" QR code, which a programmable token cannot use — on the MFA setup page choose \"Configure app without notifications\" to get a standard TOTP QR code, and capture that one")]
    PhoneFactor,
    #[error("qr_image: this QR code holds an otpauth://hotp/ (counter-based) seed — HOTP is not supported; seedvault escrows TOTP tokens only")]
    Hotp,
    #[error("qr_image: this QR code does not hold an otpauth://totp/ URI — capture the QR code the MFA setup page shows for an authenticator app")]
    NotOtpauth,
    #[error("qr_image: reading the image took longer than {0} seconds — crop the screenshot to the QR code")]
    TimedOut(u64),
}

/// A grey image for rqrr whose pixels are zeroized on drop. rqrr thresholds it in place and
/// clones it once per candidate QR code, so the clones must wipe themselves too (a plain
/// `GrayImage` would leave every copy of the seed's picture in freed memory).
#[derive(Clone)]
struct Grey {
    width: u32,
    height: u32,
    pixels: Zeroizing<Vec<u8>>,
}

impl Grey {
    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }
}

impl GenericImageView for Grey {
    type Pixel = Luma<u8>;

    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn get_pixel(&self, x: u32, y: u32) -> Luma<u8> {
        Luma([self.pixels[self.index(x, y)]])
    }
}

impl GenericImage for Grey {
    #[allow(deprecated)]
    fn get_pixel_mut(&mut self, x: u32, y: u32) -> &mut Luma<u8> {
        let i = self.index(x, y);
        Luma::from_slice_mut(&mut self.pixels[i..=i])
    }

    fn put_pixel(&mut self, x: u32, y: u32, pixel: Luma<u8>) {
        let i = self.index(x, y);
        self.pixels[i] = pixel.0[0];
    }

    #[allow(deprecated)]
    fn blend_pixel(&mut self, x: u32, y: u32, pixel: Luma<u8>) {
        self.put_pixel(x, y, pixel);
    }
}

/// What the bytes are, by their magic number; only PNG and JPEG are decoded.
fn format_of(bytes: &[u8]) -> Result<ImageFormat, QrError> {
    let text_start = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
    match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => Ok(format),
        _ if bytes.starts_with(b"%PDF") => Err(QrError::NotAnImage("a PDF document")),
        _ if text_start.contains("<svg") || text_start.trim_start().starts_with("<?xml") => {
            Err(QrError::NotAnImage("an SVG drawing"))
        }
        Ok(ImageFormat::Gif) => Err(QrError::NotAnImage("a GIF image")),
        Ok(ImageFormat::WebP) => Err(QrError::NotAnImage("a WebP image")),
        _ => Err(QrError::NotAnImage("not an image seedvault reads")),
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        _ => "JPEG",
    }
}

/// Reads the one QR code in a PNG or JPEG image and returns its text if it is an
/// `otpauth://totp/` URI (not yet parsed: that is [`crate::secret`]'s job, as for typed input).
/// Synchronous and CPU-bound: servers call [`decode_with_deadline`].
pub fn decode(bytes: &[u8]) -> Result<Zeroizing<String>, QrError> {
    if bytes.is_empty() {
        return Err(QrError::Empty);
    }
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(QrError::TooManyBytes {
            bytes: bytes.len(),
            limit: MAX_IMAGE_BYTES,
        });
    }
    let format = format_of(bytes)?;
    let damaged = || QrError::Damaged(format_name(format));
    let reader = |limits: Limits| {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(limits);
        reader
    };
    // The header alone: a bomb declares its size here, before anything is inflated.
    let (width, height) = reader(Limits::default())
        .into_dimensions()
        .map_err(|_| damaged())?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(QrError::TooManyPixels {
            width,
            height,
            limit: MAX_PIXELS / 1_000_000,
        });
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(width);
    limits.max_image_height = Some(height);
    // RGBA at 16 bits per channel plus the decoder's working rows.
    limits.max_alloc = Some(MAX_PIXELS * 8 + 16 * 1024 * 1024);
    let image = reader(limits).decode().map_err(|_| damaged())?;
    let grey = grey_of(image);
    let mut prepared = rqrr::PreparedImage::prepare(grey);
    let grids = prepared.detect_grids();
    let grid = match grids.as_slice() {
        [] => return Err(QrError::NoQr),
        [one] => one,
        several => return Err(QrError::SeveralQrs(several.len())),
    };
    let mut raw = Zeroizing::new(Vec::new());
    grid.decode_to(&mut *raw).map_err(|_| QrError::Unreadable)?;
    let text = match std::str::from_utf8(&raw) {
        Ok(text) => Zeroizing::new(text.trim().to_owned()),
        Err(_) => return Err(QrError::NotOtpauth),
    };
    classify(text)
}

/// Accepts `otpauth://totp/…` only, naming the usual wrong QR codes.
fn classify(text: Zeroizing<String>) -> Result<Zeroizing<String>, QrError> {
    let scheme_end = text.find(':').unwrap_or(0);
    let scheme = text[..scheme_end].to_ascii_lowercase();
    let kind = text
        .get(scheme_end..)
        .and_then(|rest| rest.strip_prefix("://"))
        .map(|rest| rest.split(['/', '?']).next().unwrap_or_default())
        .unwrap_or_default()
        .to_ascii_lowercase();
    match (scheme.as_str(), kind.as_str()) {
        ("otpauth", "totp") => Ok(text),
        ("otpauth", "hotp") => Err(QrError::Hotp),
        ("phonefactor", _) => Err(QrError::PhoneFactor),
        _ => Err(QrError::NotOtpauth),
    }
}

/// The image as zeroizing grey pixels; every buffer it passes through is wiped.
fn grey_of(image: DynamicImage) -> Grey {
    let (width, height) = (image.width(), image.height());
    let luma = image.to_luma8();
    wipe(image);
    Grey {
        width,
        height,
        pixels: Zeroizing::new(luma.into_raw()),
    }
}

fn wipe(image: DynamicImage) {
    match image {
        DynamicImage::ImageLuma8(b) => b.into_raw().zeroize(),
        DynamicImage::ImageLumaA8(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgb8(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgba8(b) => b.into_raw().zeroize(),
        DynamicImage::ImageLuma16(b) => b.into_raw().zeroize(),
        DynamicImage::ImageLumaA16(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgb16(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgba16(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgb32F(b) => b.into_raw().zeroize(),
        DynamicImage::ImageRgba32F(b) => b.into_raw().zeroize(),
        // A variant added by a later `image`: dropped unwiped rather than not compiling.
        _ => {}
    }
}

/// [`decode`] on a blocking thread, answered within [`DECODE_DEADLINE`] (the thread, bounded
/// by [`MAX_PIXELS`], finishes on its own and its buffers are wiped when it does). The bytes
/// are zeroized as soon as the decode is done with them.
pub async fn decode_with_deadline(bytes: Zeroizing<Vec<u8>>) -> Result<Zeroizing<String>, QrError> {
    let work = tokio::task::spawn_blocking(move || decode(&bytes));
    match tokio::time::timeout(DECODE_DEADLINE, work).await {
        Ok(Ok(result)) => result,
        // The decoder panicked on a hostile image: to the user it is a damaged one.
        Ok(Err(_)) => Err(QrError::Damaged("uploaded")),
        Err(_) => Err(QrError::TimedOut(DECODE_DEADLINE.as_secs())),
    }
}

/// The QR code of `text` as an SVG document (for the page that shows a generated seed once).
pub fn svg(text: &str) -> Result<Zeroizing<String>, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(Zeroizing::new(
        code.render::<qrcode::render::svg::Color<'_>>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .build(),
    ))
}

/// The QR code of `text` drawn with Unicode half blocks, two rows of modules per line, for
/// `seedvault token generate` on a terminal.
pub fn terminal(text: &str) -> Result<Zeroizing<String>, qrcode::types::QrError> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    Ok(Zeroizing::new(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageEncoder};

    const URI: &str =
        "otpauth://totp/Contoso:ada@example.org?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Contoso";

    /// Draws `text` as a QR code, `scale` pixels per module, at (`x`, `y`) on `canvas`.
    fn draw(canvas: &mut GrayImage, text: &str, scale: u32, x: u32, y: u32) {
        let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
        let width = code.width() as u32;
        let colors = code.to_colors();
        // Four modules of quiet zone, as every renderer draws.
        for my in 0..width + 8 {
            for mx in 0..width + 8 {
                let dark = mx >= 4
                    && my >= 4
                    && mx < width + 4
                    && my < width + 4
                    && colors[((my - 4) * width + (mx - 4)) as usize] == qrcode::Color::Dark;
                for dy in 0..scale {
                    for dx in 0..scale {
                        canvas.put_pixel(
                            x + mx * scale + dx,
                            y + my * scale + dy,
                            Luma([if dark { 20 } else { 245 }]),
                        );
                    }
                }
            }
        }
    }

    fn png(image: &GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::L8,
            )
            .unwrap();
        out
    }

    fn jpeg(image: &GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .write_image(
                image.as_raw(),
                image.width(),
                image.height(),
                image::ExtendedColorType::L8,
            )
            .unwrap();
        out
    }

    /// A QR code alone on a white canvas.
    fn qr_png(text: &str, scale: u32) -> Vec<u8> {
        let modules = qrcode::QrCode::new(text.as_bytes()).unwrap().width() as u32 + 8;
        let mut canvas = GrayImage::from_pixel(modules * scale, modules * scale, Luma([245]));
        draw(&mut canvas, text, scale, 0, 0);
        png(&canvas)
    }

    /// A screenshot: window chrome, text-like stripes and pixel noise around the QR code.
    fn screenshot(text: &str, scale: u32) -> GrayImage {
        let mut canvas = GrayImage::from_fn(1280, 800, |x, y| {
            let noise = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729)) % 23) as u8;
            if y < 40 {
                Luma([60 + noise])
            } else if (120..130).contains(&(y % 200)) && x > 700 {
                Luma([90 + noise])
            } else {
                Luma([225 + noise])
            }
        });
        draw(&mut canvas, text, scale, 180, 150);
        canvas
    }

    #[test]
    fn a_qr_code_is_read_at_several_sizes() {
        for scale in [2, 4, 8] {
            assert_eq!(*decode(&qr_png(URI, scale)).unwrap(), URI, "scale {scale}");
        }
    }

    #[test]
    fn a_qr_code_is_read_from_a_noisy_screenshot_in_png_and_jpeg() {
        let shot = screenshot(URI, 5);
        assert_eq!(*decode(&png(&shot)).unwrap(), URI);
        assert_eq!(*decode(&jpeg(&shot)).unwrap(), URI);
    }

    #[test]
    fn microsofts_phonefactor_qr_names_the_setting_that_gives_a_totp_qr() {
        let err = decode(&qr_png(
            "phonefactor://activate_account?code=123456789&url=https://mobileappcommunicator.auth.microsoft.com/activate/123/WEU",
            4,
        ))
        .unwrap_err();
        assert_eq!(err, QrError::PhoneFactor);
        assert!(err
            .to_string()
            .contains("choose \"Configure app without notifications\""));
    }

    #[test]
    fn an_hotp_qr_is_refused_as_not_supported() {
        let err = decode(&qr_png(
            "otpauth://hotp/ACME:ada?secret=JBSWY3DPEHPK3PXP&counter=0",
            4,
        ))
        .unwrap_err();
        assert_eq!(err, QrError::Hotp);
        assert!(err.to_string().contains("HOTP is not supported"));
    }

    #[test]
    fn a_qr_of_something_else_is_not_an_otpauth_uri() {
        assert_eq!(
            decode(&qr_png("https://example.org/setup", 4)).unwrap_err(),
            QrError::NotOtpauth
        );
    }

    #[test]
    fn an_image_with_two_qr_codes_asks_to_crop_to_one() {
        let mut shot = screenshot(URI, 4);
        draw(
            &mut shot,
            "otpauth://totp/B?secret=JBSWY3DPEHPK3PXP",
            4,
            800,
            300,
        );
        assert_eq!(decode(&png(&shot)).unwrap_err(), QrError::SeveralQrs(2));
    }

    #[test]
    fn an_image_without_a_qr_code_asks_to_crop_or_zoom() {
        let shot = GrayImage::from_fn(640, 400, |x, y| Luma([((x * 3 + y * 5) % 256) as u8]));
        let err = decode(&png(&shot)).unwrap_err();
        assert_eq!(err, QrError::NoQr);
        assert!(err.to_string().contains("crop or zoom"));
    }

    #[test]
    fn a_truncated_png_is_reported_as_damaged() {
        let whole = qr_png(URI, 4);
        let err = decode(&whole[..whole.len() / 2]).unwrap_err();
        assert_eq!(err, QrError::Damaged("PNG"));
    }

    #[test]
    fn svg_and_pdf_uploads_are_named_and_refused() {
        let svg_bytes = svg(URI).unwrap();
        assert_eq!(
            decode(svg_bytes.as_bytes()).unwrap_err(),
            QrError::NotAnImage("an SVG drawing")
        );
        assert_eq!(
            decode(b"%PDF-1.7\n1 0 obj <<>> endobj").unwrap_err(),
            QrError::NotAnImage("a PDF document")
        );
        assert_eq!(decode(b"").unwrap_err(), QrError::Empty);
    }

    /// A valid PNG header declaring 100,000 × 100,000 pixels (10 gigapixels) in 60 bytes.
    fn bomb() -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut chunk = |kind: &[u8], data: &[u8]| {
            png.extend((data.len() as u32).to_be_bytes());
            let mut crc_input = kind.to_vec();
            crc_input.extend(data);
            png.extend(&crc_input);
            png.extend(crc32(&crc_input).to_be_bytes());
        };
        let mut header = Vec::new();
        header.extend(100_000u32.to_be_bytes());
        header.extend(100_000u32.to_be_bytes());
        header.extend([8, 0, 0, 0, 0]);
        chunk(b"IHDR", &header);
        chunk(b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        chunk(b"IEND", &[]);
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header_before_decoding() {
        let started = std::time::Instant::now();
        let err = decode(&bomb()).unwrap_err();
        assert_eq!(
            err,
            QrError::TooManyPixels {
                width: 100_000,
                height: 100_000,
                limit: 40
            }
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn an_image_over_the_byte_limit_is_refused_unread() {
        let err = decode(&vec![0u8; MAX_IMAGE_BYTES + 1]).unwrap_err();
        assert!(matches!(err, QrError::TooManyBytes { .. }), "{err}");
    }

    #[test]
    fn a_generated_seed_is_drawn_as_svg_and_as_terminal_blocks() {
        let svg = svg(URI).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        let drawn = terminal(URI).unwrap();
        assert!(drawn.lines().count() > 10);
        assert!(drawn.contains('█') || drawn.contains('▀') || drawn.contains('▄'));
    }

    #[tokio::test]
    async fn decoding_on_a_blocking_thread_returns_the_uri() {
        let bytes = Zeroizing::new(qr_png(URI, 3));
        assert_eq!(*decode_with_deadline(bytes).await.unwrap(), URI);
    }
}
