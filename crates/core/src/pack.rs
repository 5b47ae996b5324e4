//! Packing b-bit codes into bytes, least significant bit first, no padding between codes.
//!
//! A layer of n b-bit weights takes ⌈n·b / 8⌉ bytes: the same storage as uniform b-bit.

use crate::{Error, Result};

/// Packs codes of `bits` bits each (1..=8).
pub fn pack(codes: &[u8], bits: u32) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let mut out = vec![0u8; packed_len(codes.len(), bits)];
    for (i, &c) in codes.iter().enumerate() {
        if bits < 8 && c >> bits != 0 {
            return Err(Error::Pack(format!(
                "code #{i} = {c} does not fit {bits} bits"
            )));
        }
        let bit = i * bits as usize;
        let (byte, shift) = (bit / 8, bit % 8);
        let wide = u16::from(c) << shift;
        out[byte] |= wide as u8;
        if shift + bits as usize > 8 {
            out[byte + 1] |= (wide >> 8) as u8;
        }
    }
    Ok(out)
}

/// Unpacks `n` codes of `bits` bits each.
pub fn unpack(bytes: &[u8], bits: u32, n: usize) -> Result<Vec<u8>> {
    check_bits(bits)?;
    let need = packed_len(n, bits);
    if bytes.len() < need {
        return Err(Error::Pack(format!(
            "{n} codes of {bits} bits need {need} bytes, got {}",
            bytes.len()
        )));
    }
    let mask = ((1u16 << bits) - 1) as u8;
    Ok((0..n)
        .map(|i| {
            let bit = i * bits as usize;
            let (byte, shift) = (bit / 8, bit % 8);
            let lo = u16::from(bytes[byte]);
            let hi = u16::from(*bytes.get(byte + 1).unwrap_or(&0));
            (((hi << 8 | lo) >> shift) as u8) & mask
        })
        .collect())
}

/// Bytes taken by `n` codes of `bits` bits.
pub fn packed_len(n: usize, bits: u32) -> usize {
    (n * bits as usize).div_ceil(8)
}

fn check_bits(bits: u32) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::Pack(format!("bits must be 1..=8, got {bits}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip_is_exact(bits in 1u32..=8, raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let codes: Vec<u8> = raw.iter().map(|c| if bits == 8 { *c } else { c & ((1 << bits) - 1) }).collect();
            let packed = pack(&codes, bits).unwrap();
            prop_assert_eq!(packed.len(), packed_len(codes.len(), bits));
            prop_assert_eq!(unpack(&packed, bits, codes.len()).unwrap(), codes);
        }
    }

    #[test]
    fn rejects_oversized_codes_short_buffers_and_bad_widths() {
        assert!(pack(&[4], 2).is_err());
        assert!(unpack(&[0], 3, 3).is_err());
        assert!(pack(&[0], 0).is_err());
        assert!(pack(&[0], 9).is_err());
        assert_eq!(pack(&[1, 2, 3, 0], 2).unwrap(), vec![0b00_11_10_01]);
    }
}
