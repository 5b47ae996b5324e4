//! [`PackedWeights`]: a weight matrix as its codes, in the layout the kernels read.

use crate::{KernelError, Result};

/// Weights per block of nibble-packed codes: one AVX2 register of int8 after the lookup.
pub(crate) const BLOCK: usize = 32;

/// The largest |integer| path A takes: `maddubs` adds two u8 × i8 products into an i16, and
/// 2 · 255 · 64 < 2^15, so no sum can saturate.
pub const MAX_INT: i32 = 64;

/// The table as integers: `table[i] == values[i] as f32 · unit` (to f32 rounding), which is
/// what lets path A multiply in integers and scale once at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct IntTable {
    /// One integer per table entry, |v| ≤ `MAX_INT` (64).
    pub values: Vec<i32>,
    /// The value of integer 1.
    pub unit: f32,
}

/// A `rows × cols` weight matrix (row = output channel, row-major over the inputs) stored as
/// codes: `w[r][c] = row_scales[r] · table[code[r][c]]`, except at `zeros`, where the weight
/// is exactly 0 (0 need not be a level).
///
/// Codes of ≤ 4 bits are stored two to a byte in blocks of 32 weights (16 bytes; byte `j`
/// holds weight `j` in its low nibble and weight `j + 16` in its high one), each row padded
/// to whole blocks; wider codes take a byte each.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedWeights {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) bits: u32,
    /// Bytes per row.
    pub(crate) row_bytes: usize,
    pub(crate) data: Vec<u8>,
    pub(crate) table: Vec<f32>,
    pub(crate) ints: Option<IntTable>,
    /// Per row, Σ of its integer weights (0 at the exact zeros): path A's zero-point term.
    pub(crate) int_row_sums: Vec<i32>,
    pub(crate) row_scales: Vec<f32>,
    /// Per row, the columns whose weight is exactly 0, ascending.
    pub(crate) zeros: Vec<Vec<usize>>,
}

impl PackedWeights {
    /// Packs `codes` (`rows × cols`, row-major, each below `table.len()`, which is
    /// `2^bits`) with one scale per row.
    pub fn new(
        rows: usize,
        cols: usize,
        bits: u32,
        codes: &[u8],
        table: &[f32],
        row_scales: &[f32],
    ) -> Result<PackedWeights> {
        let bad = |msg: String| Err(KernelError::Weights(msg));
        if !(2..=8).contains(&bits) {
            return bad(format!("{bits}-bit codes (2..=8 are supported)"));
        }
        if rows == 0 || cols == 0 {
            return bad(format!("an empty {rows} × {cols} matrix"));
        }
        if rows.checked_mul(cols) != Some(codes.len()) {
            return bad(format!(
                "{} codes for a {rows} × {cols} matrix",
                codes.len()
            ));
        }
        if table.len() != 1 << bits {
            return bad(format!(
                "a table of {} entries for {bits}-bit codes (needs {})",
                table.len(),
                1 << bits
            ));
        }
        if row_scales.len() != rows {
            return bad(format!("{} row scales for {rows} rows", row_scales.len()));
        }
        if let Some(i) = codes.iter().position(|&c| usize::from(c) >= table.len()) {
            return bad(format!(
                "code {} at position {i} is outside the {}-entry table",
                codes[i],
                table.len()
            ));
        }
        let nibbles = bits <= 4;
        let row_bytes = if nibbles {
            cols.div_ceil(BLOCK) * BLOCK / 2
        } else {
            cols
        };
        let mut data = vec![0u8; rows * row_bytes];
        for (row, out) in codes.chunks(cols).zip(data.chunks_mut(row_bytes)) {
            if nibbles {
                for (c, &code) in row.iter().enumerate() {
                    let (block, j) = (c / BLOCK, c % BLOCK);
                    let byte = block * BLOCK / 2 + j % (BLOCK / 2);
                    out[byte] |= if j < BLOCK / 2 { code } else { code << 4 };
                }
            } else {
                out.copy_from_slice(row);
            }
        }
        Ok(PackedWeights {
            rows,
            cols,
            bits,
            row_bytes,
            data,
            table: table.to_vec(),
            ints: None,
            int_row_sums: Vec::new(),
            row_scales: row_scales.to_vec(),
            zeros: vec![Vec::new(); rows],
        })
    }

    /// Marks flat positions (`r · cols + c`) whose weight is exactly 0 whatever their code.
    pub fn with_zeros(mut self, zeros: &[usize]) -> Result<PackedWeights> {
        let n = self.rows * self.cols;
        for &z in zeros {
            if z >= n {
                return Err(KernelError::Weights(format!(
                    "zero position {z} is outside the {n} weights"
                )));
            }
            self.zeros[z / self.cols].push(z % self.cols);
        }
        for z in &mut self.zeros {
            z.sort_unstable();
            z.dedup();
        }
        self.sum_int_rows();
        Ok(self)
    }

    /// Gives the table as integers, which lets path A run these weights.
    pub fn with_ints(mut self, ints: IntTable) -> Result<PackedWeights> {
        check_ints(&ints, &self.table, self.bits)?;
        self.ints = Some(ints);
        self.sum_int_rows();
        Ok(self)
    }

    fn sum_int_rows(&mut self) {
        if self.ints.is_none() {
            return;
        }
        self.int_row_sums = (0..self.rows)
            .map(|r| {
                (0..self.cols)
                    .map(|c| self.int_weight(r, c).unwrap_or(0))
                    .sum()
            })
            .collect();
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bits per code.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The integer table, when path A can run these weights.
    pub fn ints(&self) -> Option<&IntTable> {
        self.ints.as_ref()
    }

    /// Bytes a pass over the weights reads: codes, table and row scales.
    pub fn bytes(&self) -> usize {
        self.data.len() + 4 * (self.table.len() + self.row_scales.len())
    }

    /// The code of weight (`r`, `c`).
    pub fn code(&self, r: usize, c: usize) -> u8 {
        let row = &self.data[r * self.row_bytes..][..self.row_bytes];
        if self.bits > 4 {
            return row[c];
        }
        let (block, j) = (c / BLOCK, c % BLOCK);
        let byte = row[block * BLOCK / 2 + j % (BLOCK / 2)];
        if j < BLOCK / 2 {
            byte & 0x0F
        } else {
            byte >> 4
        }
    }

    /// Whether weight (`r`, `c`) is one of the exact zeros.
    pub fn is_zero(&self, r: usize, c: usize) -> bool {
        self.zeros[r].binary_search(&c).is_ok()
    }

    /// The float weight (`r`, `c`): `row_scale · table[code]`, or 0.
    pub fn weight(&self, r: usize, c: usize) -> f32 {
        let w = self.row_scales[r] * self.table[usize::from(self.code(r, c))];
        if self.is_zero(r, c) {
            self.row_scales[r] * 0.0
        } else {
            w
        }
    }

    /// The integer weight (`r`, `c`) of path A (0 at the exact zeros), if there is an
    /// integer table.
    pub fn int_weight(&self, r: usize, c: usize) -> Option<i32> {
        let ints = self.ints.as_ref()?;
        Some(if self.is_zero(r, c) {
            0
        } else {
            ints.values[usize::from(self.code(r, c))]
        })
    }

    /// All float weights, row-major: what the compact ONNX decodes to.
    pub fn decode(&self) -> Vec<f32> {
        let mut w = vec![0.0; self.rows * self.cols];
        crate::decode::rows_f32(crate::Cpu::detect(), self, 0..self.rows, &mut w);
        w
    }
}

fn check_ints(ints: &IntTable, table: &[f32], bits: u32) -> Result<()> {
    let bad = |msg: String| Err(KernelError::Int8(msg));
    if bits > 4 {
        return bad(format!(
            "{bits}-bit codes: the int8 lookup takes at most 16 entries (4 bits)"
        ));
    }
    if ints.values.len() != table.len() {
        return bad(format!(
            "{} integers for a {}-entry table",
            ints.values.len(),
            table.len()
        ));
    }
    if !(ints.unit.is_finite() && ints.unit > 0.0) {
        return bad(format!("unit {} is not a positive number", ints.unit));
    }
    for (i, (&v, &t)) in ints.values.iter().zip(table).enumerate() {
        if v.abs() > MAX_INT {
            return bad(format!(
                "entry {i} = {v}: more than ±{MAX_INT} could overflow the 16-bit sums"
            ));
        }
        let exact = v as f32 * ints.unit;
        if (exact - t).abs() > 1e-6 * t.abs().max(ints.unit) {
            return bad(format!(
                "entry {i}: {v} · {} = {exact}, but the table holds {t}",
                ints.unit
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_the_nibble_layout() {
        let (rows, cols) = (3, 70);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 16) as u8).collect();
        let table: Vec<f32> = (0..16).map(|i| i as f32 - 8.0).collect();
        let w = PackedWeights::new(rows, cols, 4, &codes, &table, &[1.0; 3])
            .and_then(|w| w.with_zeros(&[5]))
            .unwrap();
        assert_eq!(w.row_bytes, 48);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(w.code(r, c), codes[r * cols + c]);
            }
        }
        assert_eq!(w.weight(0, 5), 0.0);
        assert_eq!(w.weight(0, 6), table[usize::from(codes[6])]);
        assert_eq!(w.decode()[7], table[usize::from(codes[7])]);
    }

    #[test]
    fn weights_that_do_not_fit_are_refused() {
        let table = [0.5, 1.0, -0.5, -1.0];
        let new = |codes: &[u8], table: &[f32], scales: &[f32], zeros: &[usize]| {
            PackedWeights::new(2, 2, 2, codes, table, scales)
                .and_then(|w| w.with_zeros(zeros))
                .unwrap_err()
                .to_string()
        };
        assert!(new(&[0, 1, 2], &table, &[1.0; 2], &[]).contains("3 codes for a 2 × 2"));
        assert!(new(&[0, 1, 2, 4], &table, &[1.0; 2], &[]).contains("code 4 at position 3"));
        assert!(new(&[0; 4], &table[..3], &[1.0; 2], &[]).contains("table of 3 entries"));
        assert!(new(&[0; 4], &table, &[1.0], &[]).contains("1 row scales for 2 rows"));
        assert!(new(&[0; 4], &table, &[1.0; 2], &[4]).contains("zero position 4"));
        let ints = |values: Vec<i32>, unit: f32| {
            PackedWeights::new(2, 2, 2, &[0; 4], &table, &[1.0; 2])
                .and_then(|w| w.with_ints(IntTable { values, unit }))
        };
        assert!(ints(vec![1, 2, -1, -2], 0.5).is_ok());
        let e = ints(vec![1, 3, -1, -2], 0.5).unwrap_err().to_string();
        assert!(
            e.contains("entry 1: 3 · 0.5 = 1.5, but the table holds 1"),
            "{e}"
        );
        let e = ints(vec![100, 200, -100, -200], 0.005)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than ±64"), "{e}");
    }
}
