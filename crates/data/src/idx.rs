//! IDX files (MNIST, Fashion-MNIST), raw or gzip-compressed (detected by magic bytes).
//!
//! Format: magic `00 00 TT NN` (TT the element type, `08` = unsigned byte, the only one
//! supported; NN the number of dimensions), NN big-endian `u32` dimensions, then the data.
//! Every header is checked against the file's length before anything is allocated: the
//! data of a raw file must be exactly what the header announces, and a gzip file cannot
//! announce more than deflate's maximum expansion of its compressed size.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

/// Gzip magic bytes.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data by more than about 1032:1; a header announcing more than
/// this many bytes per compressed byte is lying.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// One IDX array: its dimensions (the first one is the count of items) and the bytes of
/// the first `items` items.
#[derive(Debug)]
pub(crate) struct IdxArray {
    /// Dimensions as the header gives them (`dims[0]` counts every item in the file).
    pub dims: Vec<usize>,
    /// Items actually read (`dims[0]`, or fewer with a limit).
    pub items: usize,
    /// `items * product(dims[1..])` bytes.
    pub data: Vec<u8>,
}

/// Whether the file starts with the gzip magic.
pub(crate) fn is_gzip(head: &[u8]) -> bool {
    head.len() >= 2 && head[..2] == GZIP_MAGIC
}

/// Whether (decompressed) bytes start like an IDX file.
pub(crate) fn looks_like_idx(head: &[u8]) -> bool {
    head.len() >= 4 && head[0] == 0 && head[1] == 0 && head[3] > 0
}

fn read_head(path: &Path, n: usize) -> Result<Vec<u8>> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut head = Vec::with_capacity(n);
    (&mut f)
        .take(n as u64)
        .read_to_end(&mut head)
        .map_err(|e| DataError::io(path, e))?;
    Ok(head)
}

/// Whether `path` is an IDX file, raw or gzip (looking only at its first bytes).
pub(crate) fn sniff(path: &Path) -> Result<bool> {
    let head = read_head(path, 4)?;
    if is_gzip(&head) {
        return Ok(true);
    }
    Ok(looks_like_idx(&head))
}

/// Read an IDX file of unsigned bytes with `ndim` dimensions, keeping at most `limit`
/// items. `what` describes the expected content for error messages.
pub(crate) fn read(
    path: &Path,
    ndim: u8,
    what: &'static str,
    limit: Option<usize>,
) -> Result<IdxArray> {
    let io = |e: std::io::Error| DataError::io(path, e);
    let file = File::open(path).map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            DataError::NotFound { path: path.into() }
        } else {
            io(e)
        }
    })?;
    let file_len = file.metadata().map_err(io)?.len();
    let gz = is_gzip(&read_head(path, 2)?);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };

    let mut magic = [0u8; 4];
    read_full(&mut reader, &mut magic, path, "the 4-byte IDX magic")?;
    if magic[0] != 0 || magic[1] != 0 || magic[3] != ndim {
        return Err(DataError::BadMagic {
            path: path.into(),
            found: magic,
            expected: what,
        });
    }
    if magic[2] != 0x08 {
        return Err(DataError::BadHeader {
            path: path.into(),
            reason: format!(
                "element type 0x{:02x} ({}) is not supported, only 0x08 (unsigned byte)",
                magic[2],
                type_name(magic[2])
            ),
        });
    }
    let mut raw_dims = vec![0u8; 4 * ndim as usize];
    read_full(&mut reader, &mut raw_dims, path, "the IDX dimensions")?;
    let dims: Vec<usize> = raw_dims
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let bad = |reason: String| DataError::BadHeader {
        path: path.into(),
        reason,
    };
    if dims[0] == 0 {
        return Err(DataError::Empty {
            path: path.into(),
            hint: ": the header counts 0 items".into(),
        });
    }
    if dims[1..].contains(&0) {
        return Err(bad(format!("dimensions {dims:?} include a zero")));
    }
    let header_len = 4 + 4 * ndim as u64;
    let item_bytes = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let total = item_bytes.and_then(|b| b.checked_mul(dims[0] as u64));
    let (Some(item_bytes), Some(total)) = (item_bytes, total) else {
        return Err(bad(format!("dimensions {dims:?} overflow")));
    };
    if gz {
        let most = file_len.saturating_mul(MAX_DEFLATE_RATIO);
        if total > most {
            return Err(bad(format!(
                "dimensions {dims:?} announce {total} bytes, more than a {file_len}-byte \
                 gzip file can hold"
            )));
        }
    } else {
        let actual = file_len.saturating_sub(header_len);
        if actual < total {
            return Err(DataError::Truncated {
                path: path.into(),
                expected: total,
                actual,
            });
        }
        if actual > total {
            return Err(DataError::TrailingBytes {
                path: path.into(),
                expected: total,
                extra: actual - total,
            });
        }
    }

    let items = limit.map_or(dims[0], |l| l.min(dims[0]));
    // Bounded by the file's size (raw) or by what the decompressor really produces (gz).
    let want = items as u64 * item_bytes;
    let mut data = Vec::with_capacity(if gz { 0 } else { want as usize });
    let got = (&mut reader).take(want).read_to_end(&mut data);
    match got {
        Ok(_) if (data.len() as u64) < want => {
            return Err(DataError::Truncated {
                path: path.into(),
                expected: total,
                actual: data.len() as u64,
            })
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
            return Err(DataError::Truncated {
                path: path.into(),
                expected: total,
                actual: data.len() as u64,
            })
        }
        Err(e) => return Err(io(e)),
    }
    if gz && items == dims[0] {
        let mut extra = Vec::new();
        (&mut reader)
            .take(1 << 16)
            .read_to_end(&mut extra)
            .map_err(io)?;
        if !extra.is_empty() {
            return Err(DataError::TrailingBytes {
                path: path.into(),
                expected: total,
                extra: extra.len() as u64,
            });
        }
    }
    Ok(IdxArray { dims, items, data })
}

fn read_full(reader: &mut dyn Read, buf: &mut [u8], path: &Path, what: &str) -> Result<()> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == ErrorKind::UnexpectedEof {
            DataError::BadHeader {
                path: path.into(),
                reason: format!("the file ends inside {what}"),
            }
        } else {
            DataError::io(path, e)
        }
    })
}

fn type_name(t: u8) -> &'static str {
    match t {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "short",
        0x0C => "int",
        0x0D => "float",
        0x0E => "double",
        _ => "unknown",
    }
}

/// The labels files that may go with an images file, most likely first:
/// `X-images-idx3-ubyte[.gz]` → `X-labels-idx1-ubyte` with the same compression, then the
/// other. Empty when the name has no `images` in it.
pub(crate) fn labels_candidates(images: &Path) -> Vec<PathBuf> {
    let Some(name) = images.file_name().and_then(|n| n.to_str()) else {
        return Vec::new();
    };
    let (base, gz) = match name.strip_suffix(".gz") {
        Some(b) => (b, true),
        None => (name, false),
    };
    let Some(i) = base.rfind("images") else {
        return Vec::new();
    };
    let labels =
        format!("{}labels{}", &base[..i], &base[i + "images".len()..]).replace("idx3", "idx1");
    let plain = images.with_file_name(&labels);
    let packed = images.with_file_name(format!("{labels}.gz"));
    if gz {
        vec![packed, plain]
    } else {
        vec![plain, packed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_names() {
        assert_eq!(
            labels_candidates(Path::new("d/t10k-images-idx3-ubyte")),
            vec![
                PathBuf::from("d/t10k-labels-idx1-ubyte"),
                PathBuf::from("d/t10k-labels-idx1-ubyte.gz")
            ]
        );
        assert_eq!(
            labels_candidates(Path::new("train-images.idx3-ubyte.gz")),
            vec![
                PathBuf::from("train-labels.idx1-ubyte.gz"),
                PathBuf::from("train-labels.idx1-ubyte")
            ]
        );
        assert!(labels_candidates(Path::new("pictures.bin")).is_empty());
    }
}
