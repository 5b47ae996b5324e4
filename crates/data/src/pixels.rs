//! 8-bit image operations: colour conversion (ITU-R BT.601 luma, rounded as Pillow rounds),
//! bilinear resize (antialiased by the `image` crate's triangle filter, whose support widens
//! with the shrink factor as Pillow's does; within one level of Pillow on real photos) and crop;
//! then the `f32` normalisation into CHW.

use crate::preprocess::{Color, Preprocess};

/// An 8-bit image, `height × width × channels` interleaved (HWC), 1 or 3 channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Image8 {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

/// Largest image (in bytes) a resize may produce: a 1×100000 picture resized to a shorter
/// side of 256 would otherwise ask for gigabytes. Lower under the fuzzer, whose inputs must
/// stay within its memory and time limits.
#[cfg(not(fuzzing))]
pub(crate) const MAX_RESIZED_BYTES: usize = 1 << 28;
#[cfg(fuzzing)]
pub(crate) const MAX_RESIZED_BYTES: usize = 1 << 22;

impl Image8 {
    /// Convert to the colour the model wants, the way Pillow's `convert("L" | "RGB")` does.
    pub fn into_color(self, color: Color) -> Image8 {
        match (self.channels, color) {
            (1, Color::Gray) | (3, Color::Rgb) => self,
            (3, Color::Gray) => Image8 {
                data: self
                    .data
                    .chunks_exact(3)
                    .map(|p| {
                        let l = p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471;
                        ((l + 0x8000) >> 16) as u8
                    })
                    .collect(),
                channels: 1,
                ..self
            },
            (_, Color::Rgb) => Image8 {
                data: self.data.iter().flat_map(|&v| [v, v, v]).collect(),
                channels: 3,
                ..self
            },
            // Only 1- and 3-channel images are ever built.
            (_, Color::Gray) => self,
        }
    }

    /// `[left, left + w) × [top, top + h)`; the caller checks that it lies inside.
    pub fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Image8 {
        let c = self.channels;
        let mut data = Vec::with_capacity(h * w * c);
        for y in top..top + h {
            let row = (y * self.width + left) * c;
            data.extend_from_slice(&self.data[row..row + w * c]);
        }
        Image8 {
            width: w,
            height: h,
            channels: c,
            data,
        }
    }
}

/// Output size of a shorter-side resize, as `scripts/` computes it in Python:
/// `(s, round(h*s/w)) if w <= h else (round(w*s/h), s)`, `round` being half-to-even.
pub(crate) fn shorter_side_size(width: usize, height: usize, s: u32) -> (usize, usize) {
    let s = s as usize;
    let round = |x: f64| x.round_ties_even().max(1.0) as usize;
    if width <= height {
        (s, round(height as f64 * s as f64 / width as f64))
    } else {
        (round(width as f64 * s as f64 / height as f64), s)
    }
}

/// Bilinear resize of an 8-bit L or RGB image. With `antialias` (what Pillow's BILINEAR does)
/// the filter widens by the shrink factor, so every input pixel counts; without it, each output
/// pixel interpolates the 2×2 input pixels around its centre.
pub(crate) fn resize_bilinear(img: &Image8, new_w: usize, new_h: usize, antialias: bool) -> Image8 {
    if (new_w, new_h) == (img.width, img.height) {
        return img.clone();
    }
    let data = if antialias {
        triangle_resize(img, new_w, new_h)
    } else {
        two_by_two_resize(img, new_w, new_h)
    };
    Image8 {
        width: new_w,
        height: new_h,
        channels: img.channels,
        data,
    }
}

fn triangle_resize(img: &Image8, new_w: usize, new_h: usize) -> Vec<u8> {
    use image::imageops::{resize, FilterType};
    use image::{ImageBuffer, Luma, Rgb};
    let (w, h) = (img.width as u32, img.height as u32);
    let (nw, nh) = (new_w as u32, new_h as u32);
    // The buffer sizes match by construction, so `from_raw` cannot fail; an empty result is
    // the only fallback needed.
    if img.channels == 1 {
        ImageBuffer::<Luma<u8>, _>::from_raw(w, h, img.data.clone())
            .map(|b| resize(&b, nw, nh, FilterType::Triangle).into_raw())
            .unwrap_or_default()
    } else {
        ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, img.data.clone())
            .map(|b| resize(&b, nw, nh, FilterType::Triangle).into_raw())
            .unwrap_or_default()
    }
}

fn two_by_two_resize(img: &Image8, new_w: usize, new_h: usize) -> Vec<u8> {
    let c = img.channels;
    // Output pixel centres mapped into input coordinates (pixel centres at i + 0.5).
    let taps = |out: usize, size: usize, new: usize| -> (usize, usize, f32) {
        let pos =
            ((out as f32 + 0.5) * size as f32 / new as f32 - 0.5).clamp(0.0, (size - 1) as f32);
        let lo = pos.floor() as usize;
        (lo, (lo + 1).min(size - 1), pos - lo as f32)
    };
    let mut out = vec![0u8; new_w * new_h * c];
    for y in 0..new_h {
        let (y0, y1, fy) = taps(y, img.height, new_h);
        for x in 0..new_w {
            let (x0, x1, fx) = taps(x, img.width, new_w);
            for ch in 0..c {
                let p = |yy: usize, xx: usize| img.data[(yy * img.width + xx) * c + ch] as f32;
                let top = p(y0, x0) * (1.0 - fx) + p(y0, x1) * fx;
                let bottom = p(y1, x0) * (1.0 - fx) + p(y1, x1) * fx;
                out[(y * new_w + x) * c + ch] = (top * (1.0 - fy) + bottom * fy).round() as u8;
            }
        }
    }
    out
}

/// Per-channel lookup table `(p * scale - mean[c]) / std[c]` for p in 0..=255, computed in
/// `f32` in exactly that order (no reciprocal), as numpy does.
pub(crate) fn normalize_table(pre: &Preprocess) -> Vec<[f32; 256]> {
    (0..pre.channels())
        .map(|c| {
            let mut t = [0f32; 256];
            for (p, v) in t.iter_mut().enumerate() {
                *v = (p as f32 * pre.scale - pre.mean[c]) / pre.std[c];
            }
            t
        })
        .collect()
}

/// Write an HWC image as CHW floats through the tables; `out.len()` must be `h * w * c`.
pub(crate) fn write_chw(img: &Image8, table: &[[f32; 256]], out: &mut [f32]) {
    let plane = img.width * img.height;
    let c = img.channels;
    for (ch, t) in table.iter().enumerate().take(c) {
        let dst = &mut out[ch * plane..(ch + 1) * plane];
        for (d, px) in dst.iter_mut().zip(img.data.chunks_exact(c)) {
            *d = t[px[ch] as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(w: usize, h: usize, f: impl Fn(usize, usize) -> u8) -> Image8 {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.push(f(x, y));
            }
        }
        Image8 {
            width: w,
            height: h,
            channels: 1,
            data,
        }
    }

    #[test]
    fn shorter_side_rounds_half_to_even() {
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256)); // 341.33
        assert_eq!(shorter_side_size(375, 500, 256), (256, 341));
        assert_eq!(shorter_side_size(4, 2, 3), (6, 3));
        // 5 * 3 / 2 = 7.5 -> 8 (even), 7 * 3 / 2 = 10.5 -> 10 (even)
        assert_eq!(shorter_side_size(5, 2, 3), (8, 3));
        assert_eq!(shorter_side_size(7, 2, 3), (10, 3));
        assert_eq!(shorter_side_size(10, 10, 7), (7, 7));
    }

    #[test]
    fn resize_constant_stays_constant_and_identity_is_copy() {
        let img = gray(37, 23, |_, _| 200);
        let r = resize_bilinear(&img, 11, 7, true);
        assert_eq!((r.width, r.height), (11, 7));
        assert!(r.data.iter().all(|&v| v == 200));
        let up = resize_bilinear(&img, 80, 50, true);
        assert!(up.data.iter().all(|&v| v == 200));
        assert_eq!(resize_bilinear(&img, 37, 23, true), img);
    }

    #[test]
    fn halving_averages_pixel_pairs_with_antialias() {
        // Shrinking by 2 widens the triangle to support 2: four taps weighted 1/8, 3/8,
        // 3/8, 1/8, so alternating 0 / 255 comes out at 127.5 (within a level).
        let img = gray(8, 1, |x, _| if x % 2 == 0 { 0 } else { 255 });
        let r = resize_bilinear(&img, 4, 1, true);
        assert!(r.data[1..3].iter().all(|&v| v.abs_diff(128) <= 1), "{r:?}");
        // Without antialias the filter only sees the two nearest pixels: still the mean.
        let r = resize_bilinear(&img, 4, 1, false);
        assert!(r.data.iter().all(|&v| v.abs_diff(128) <= 1), "{r:?}");
    }

    #[test]
    fn color_conversions_use_bt601_luma() {
        let rgb = Image8 {
            width: 2,
            height: 1,
            channels: 3,
            data: vec![255, 0, 0, 10, 200, 30],
        };
        let l = rgb.clone().into_color(Color::Gray);
        // Pillow: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16
        assert_eq!(l.data, vec![76, 124]);
        let back = l.into_color(Color::Rgb);
        assert_eq!(back.data, vec![76, 76, 76, 124, 124, 124]);
    }

    #[test]
    fn crop_and_chw() {
        let img = Image8 {
            width: 3,
            height: 2,
            channels: 3,
            data: (0..18).collect(),
        };
        let c = img.crop(1, 1, 1, 2);
        assert_eq!(c.data, vec![12, 13, 14, 15, 16, 17]);
        let pre = Preprocess::new(Color::Rgb).with_normalize(1.0, &[1.0, 2.0, 3.0], &[2.0]);
        let t = normalize_table(&pre);
        let mut out = vec![0f32; 6];
        write_chw(&c, &t, &mut out);
        assert_eq!(out, vec![5.5, 7.0, 5.5, 7.0, 5.5, 7.0]);
    }
}
