//! Universal sets: the magnitudes a layer's subset is chosen from.
//!
//! Every point is a sum of a few powers of two (each term may also be absent), normalised so
//! the largest point is 1. The paper's set is `[0,-1,-3,_]+[0,-2,-4,_]`: (a + b) / 2 with
//! a ∈ {1, 2⁻¹, 2⁻³, 0} and b ∈ {1, 2⁻², 2⁻⁴, 0}, 15 distinct magnitudes.
//!
//! Spec syntax (what `--uset` accepts):
//! - `paper` — the paper's 15-point set.
//! - `[e,e,…]+[e,e,…]+…` — one bracket per term, listing the exponents that term may take;
//!   `_` means the term is absent (adds 0). Example: `[0,-1,-3,_]+[0,-2,-4,_]` (= `paper`).
//! - `sums:K:HI..LO` — K terms, each any of 2^HI, 2^(HI-1), …, 2^LO or absent.
//!   Example: `sums:2:0..-5` (23 points), `sums:3:0..-6` (≥ 40 points).

use crate::{Error, Result};

/// Most terms a point may have (each term is one shift and one add in hardware).
const MAX_TERMS: usize = 4;
/// Exponents are kept in a range where f64 sums stay exact.
const MAX_EXPONENT_ABS: i32 = 24;
/// Bound on the number of points, so a hostile spec cannot exhaust memory.
const MAX_POINTS: usize = 4096;

/// A normalised universal set (largest point exactly 1, all points distinct, ≥ 0).
#[derive(Debug, Clone, PartialEq)]
pub struct UniversalSet {
    spec: String,
    /// Points in generation order (first term outermost), the order the reference enumerates.
    in_order: Vec<f64>,
    /// The same points, ascending.
    sorted: Vec<f64>,
}

impl UniversalSet {
    /// The paper's 15-point set.
    pub fn paper() -> Self {
        Self::parse("paper").expect("the paper's spec is valid")
    }

    /// Parses a spec (see the module docs for the syntax).
    pub fn parse(spec: &str) -> Result<Self> {
        let bad = |msg: &str| Error::UsetSpec {
            spec: spec.to_string(),
            msg: msg.to_string(),
        };
        let trimmed = spec.trim();
        let terms = if trimmed == "paper" {
            vec![
                vec![Some(0), Some(-1), Some(-3), None],
                vec![Some(0), Some(-2), Some(-4), None],
            ]
        } else if let Some(rest) = trimmed.strip_prefix("sums:") {
            parse_sums(rest).map_err(|m| bad(&m))?
        } else if trimmed.starts_with('[') {
            parse_terms(trimmed).map_err(|m| bad(&m))?
        } else {
            return Err(bad(
                "expected `paper`, `sums:K:HI..LO` or bracketed terms like `[0,-1,_]+[0,-2,_]`",
            ));
        };
        if terms.is_empty() || terms.len() > MAX_TERMS {
            return Err(bad(&format!("need 1 to {MAX_TERMS} terms")));
        }
        let total: usize = terms.iter().map(Vec::len).product();
        if total > MAX_POINTS * 16 {
            return Err(bad("too many combinations"));
        }
        let mut in_order: Vec<f64> = Vec::new();
        for combo in 0..total {
            let mut rest = combo;
            let mut value = 0.0;
            // Last term varies fastest: the paper loops over a (outer) then b (inner).
            let mut digits = vec![0; terms.len()];
            for (t, term) in terms.iter().enumerate().rev() {
                digits[t] = rest % term.len();
                rest /= term.len();
            }
            for (t, term) in terms.iter().enumerate() {
                if let Some(e) = term[digits[t]] {
                    value += 2f64.powi(e);
                }
            }
            if !in_order.contains(&value) {
                in_order.push(value);
            }
        }
        if in_order.len() > MAX_POINTS {
            return Err(bad(&format!("more than {MAX_POINTS} points")));
        }
        let max = in_order.iter().cloned().fold(0.0, f64::max);
        if max <= 0.0 {
            return Err(bad("every term is absent: the set has no nonzero point"));
        }
        if in_order.len() < 2 {
            return Err(bad("the set needs at least 2 distinct points"));
        }
        // Normalising by the max keeps every point a sum of powers of two (max is one too,
        // or a sum whose ratio the scale α absorbs).
        for v in &mut in_order {
            *v /= max;
        }
        let mut sorted = in_order.clone();
        sorted.sort_by(f64::total_cmp);
        Ok(Self {
            spec: trimmed.to_string(),
            in_order,
            sorted,
        })
    }

    /// The spec this set was parsed from.
    pub fn spec(&self) -> &str {
        &self.spec
    }

    /// Points in generation order.
    pub fn in_order(&self) -> &[f64] {
        &self.in_order
    }

    /// Points ascending.
    pub fn sorted(&self) -> &[f64] {
        &self.sorted
    }

    /// Number of distinct points.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Always false: a set has at least 2 points.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

impl std::fmt::Display for UniversalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({} points)", self.spec, self.len())
    }
}

/// The exponents of `v`'s binary expansion, largest first: `v = Σ 2^e`, when `v` is finite,
/// ≥ 0 and a sum of at most `max_terms` powers of two (`0` is the empty sum). A level with
/// `t` terms is `t` shifts and `t − 1` adds in hardware; `None` means it needs a multiplier.
pub fn power_of_two_terms(v: f64, max_terms: usize) -> Option<Vec<i32>> {
    if !v.is_finite() || v < 0.0 {
        return None;
    }
    let bits = v.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    // v = mantissa · 2^shift exactly.
    let (mantissa, shift) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    if mantissa.count_ones() as usize > max_terms {
        return None;
    }
    Some(
        (0..53)
            .rev()
            .filter(|k| mantissa >> k & 1 == 1)
            .map(|k| k + shift)
            .collect(),
    )
}

type Terms = Vec<Vec<Option<i32>>>;

fn parse_exponent(s: &str) -> std::result::Result<i32, String> {
    let e: i32 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not an integer exponent or `_`", s.trim()))?;
    if e.abs() > MAX_EXPONENT_ABS {
        return Err(format!("exponent {e} outside ±{MAX_EXPONENT_ABS}"));
    }
    Ok(e)
}

fn parse_terms(s: &str) -> std::result::Result<Terms, String> {
    let mut terms = Vec::new();
    for part in s.split('+') {
        let part = part.trim();
        let inner = part
            .strip_prefix('[')
            .and_then(|p| p.strip_suffix(']'))
            .ok_or_else(|| format!("term `{part}` must be written `[e,e,…]`"))?;
        let mut options = Vec::new();
        for item in inner.split(',') {
            let item = item.trim();
            if item.is_empty() {
                return Err(format!("empty exponent in `{part}`"));
            }
            let opt = if item == "_" {
                None
            } else {
                Some(parse_exponent(item)?)
            };
            if options.contains(&opt) {
                return Err(format!("`{item}` repeated in `{part}`"));
            }
            options.push(opt);
        }
        terms.push(options);
    }
    Ok(terms)
}

fn parse_sums(s: &str) -> std::result::Result<Terms, String> {
    let (k, range) = s
        .split_once(':')
        .ok_or("expected `sums:K:HI..LO`, e.g. `sums:2:0..-5`")?;
    let k: usize = k
        .trim()
        .parse()
        .map_err(|_| format!("term count `{k}` is not a number"))?;
    if k == 0 || k > MAX_TERMS {
        return Err(format!("term count must be 1..={MAX_TERMS}, got {k}"));
    }
    let (hi, lo) = range
        .split_once("..")
        .ok_or("expected an exponent range `HI..LO`, e.g. `0..-5`")?;
    let (hi, lo) = (parse_exponent(hi)?, parse_exponent(lo)?);
    if lo > hi {
        return Err(format!(
            "exponent range {hi}..{lo} is empty (write the larger first)"
        ));
    }
    let options: Vec<Option<i32>> = (lo..=hi).rev().map(Some).chain([None]).collect();
    Ok(vec![options; k])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_paper_point_is_a_sum_of_two_powers_of_two() {
        for &p in UniversalSet::paper().sorted() {
            let terms = power_of_two_terms(p, 2).expect("two terms");
            assert_eq!(terms.iter().map(|&e| 2f64.powi(e)).sum::<f64>(), p);
        }
        assert_eq!(power_of_two_terms(0.625, 2), Some(vec![-1, -3]));
        assert_eq!(power_of_two_terms(0.0, 2), Some(vec![]));
        assert_eq!(power_of_two_terms(1.0 / 7.0, 4), None);
        assert_eq!(power_of_two_terms(0.875, 2), None);
        assert_eq!(power_of_two_terms(-0.5, 2), None);
        assert_eq!(power_of_two_terms(f64::NAN, 2), None);
    }

    #[test]
    fn paper_set_has_the_papers_15_points_in_its_order() {
        let u = UniversalSet::paper();
        let expected = [
            1.0, 0.625, 0.53125, 0.5, 0.75, 0.375, 0.28125, 0.25, 0.5625, 0.1875, 0.09375, 0.0625,
            0.125, 0.03125, 0.0,
        ];
        assert_eq!(u.in_order(), &expected);
        assert_eq!(u.len(), 15);
        assert_eq!(u.sorted()[0], 0.0);
        assert_eq!(u.sorted()[14], 1.0);
        assert_eq!(
            UniversalSet::parse("[0,-1,-3,_]+[0,-2,-4,_]")
                .unwrap()
                .in_order(),
            u.in_order()
        );
    }

    #[test]
    fn sums_spec_builds_two_term_sets() {
        let u = UniversalSet::parse("sums:2:0..-5").unwrap();
        // pairs with repetition from 7 options (6 exponents + absent) = 28, minus 2^e+2^e
        // collisions with 2^(e+1)+absent (5 of them).
        assert_eq!(u.len(), 23);
        assert!(u.sorted().windows(2).all(|w| w[0] < w[1]));
        let three = UniversalSet::parse("sums:3:0..-6").unwrap();
        assert!(three.len() >= 40, "3-term set has {} points", three.len());
    }

    #[test]
    fn malformed_specs_are_rejected_with_a_reason() {
        for spec in [
            "",
            "papers",
            "[0,-1",
            "[0,,1]",
            "[a]",
            "[_]",
            "[0,0]",
            "sums:0:0..-3",
            "sums:9:0..-3",
            "sums:2:-3..0",
            "sums:2:0..-99",
            "sums:2",
            "[0]",
        ] {
            let err = UniversalSet::parse(spec).unwrap_err();
            assert!(
                matches!(err, Error::UsetSpec { .. }),
                "{spec:?} gave {err:?}"
            );
            assert!(err.to_string().contains("universal-set spec"), "{err}");
        }
    }
}
