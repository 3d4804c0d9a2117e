//! QR images made in the test, as a phone's or a browser's screenshot would show them: drawn
//! module by module from the `qrcode` crate's matrix, encoded as PNG with `image`.

use image::{GrayImage, ImageEncoder, Luma};

/// Draws `text` as a QR code, `scale` pixels per module with a four-module quiet zone, at
/// (`x`, `y`) on `canvas`.
pub fn draw(canvas: &mut GrayImage, text: &str, scale: u32, x: u32, y: u32) {
    let code = qrcode::QrCode::new(text.as_bytes()).unwrap();
    let width = code.width() as u32;
    let colors = code.to_colors();
    for my in 0..width + 8 {
        for mx in 0..width + 8 {
            let inside = (4..width + 4).contains(&mx) && (4..width + 4).contains(&my);
            let dark =
                inside && colors[((my - 4) * width + (mx - 4)) as usize] == qrcode::Color::Dark;
            for dy in 0..scale {
                for dx in 0..scale {
                    let value = if dark { 25 } else { 240 };
                    canvas.put_pixel(x + mx * scale + dx, y + my * scale + dy, Luma([value]));
                }
            }
        }
    }
}

pub fn png(image: &GrayImage) -> Vec<u8> {
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

/// A screenshot of a setup page: a title bar, lines of text and the QR code in the middle.
pub fn screenshot(text: &str) -> Vec<u8> {
    let mut canvas = GrayImage::from_fn(900, 640, |x, y| {
        let noise = ((x * 31 + y * 17) % 9) as u8;
        if y < 36 {
            Luma([70 + noise])
        } else if y % 90 < 8 && x > 560 {
            Luma([100 + noise])
        } else {
            Luma([230 + noise])
        }
    });
    draw(&mut canvas, text, 4, 120, 120);
    png(&canvas)
}

/// The text of the one QR code in a PNG (a page screenshot), read with rqrr as the test's own
/// independent decoder.
pub fn read(png_bytes: &[u8]) -> String {
    let image = image::load_from_memory(png_bytes).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare(image);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "expected one QR code in the screenshot");
    grids[0].decode().unwrap().1
}

/// A decompression bomb: a 1 × 1 PNG whose header is rewritten to declare 50,000 × 50,000
/// pixels (2.5 gigapixels), with the header's CRC made valid again.
pub fn bomb() -> Vec<u8> {
    let mut png = png(&GrayImage::from_pixel(1, 1, Luma([255])));
    // IHDR: length (8..12), type (12..16), width (16..20), height (20..24), …, CRC (29..33).
    png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
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
