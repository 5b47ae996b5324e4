//! The paper's first/last-layer rule, in one place: the first and last weight layers keep a
//! higher precision (uniform at `first_last_bits`, 8 by default), are not learned in
//! reconstruction, and the last layer's input activation is quantized at no fewer than 8 bits;
//! the first layer's input (the image) is not quantized at all.

use subsetq_onnx::LayerRole;

/// True for the layers the rule keeps at high precision: the first and the last.
pub fn keeps_high_precision(role: LayerRole) -> bool {
    role.is_first() || role.is_last()
}

/// The weight bits of a layer with `role`.
pub fn weight_bits(role: LayerRole, bits: u32, first_last_bits: u32) -> u32 {
    if keeps_high_precision(role) {
        first_last_bits
    } else {
        bits
    }
}

/// True when reconstruction learns the layer's rounding and channel scales.
pub fn is_learned(role: LayerRole) -> bool {
    !keeps_high_precision(role)
}

/// The bits of the quantizer on a layer's data input when activations are quantized at
/// `abits`; `None` for the first layer, whose input is the image.
pub fn input_activation_bits(role: LayerRole, abits: u32) -> Option<u32> {
    if role.is_first() {
        None
    } else if role.is_last() {
        Some(abits.max(8))
    } else {
        Some(abits)
    }
}

/// The role's name in reports: `first`, `middle`, `last` or `only`.
pub fn role_name(role: LayerRole) -> &'static str {
    match role {
        LayerRole::Only => "only",
        LayerRole::First => "first",
        LayerRole::Last => "last",
        LayerRole::Middle => "middle",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last_layers_stay_high_precision() {
        use LayerRole::*;
        assert_eq!(
            [First, Middle, Last, Only].map(|r| weight_bits(r, 3, 8)),
            [8, 3, 8, 8]
        );
        assert_eq!(
            [First, Middle, Last, Only].map(is_learned),
            [false, true, false, false]
        );
        assert_eq!(
            [First, Middle, Last, Only].map(|r| input_activation_bits(r, 4)),
            [None, Some(4), Some(8), None]
        );
        assert_eq!(input_activation_bits(Last, 16), Some(16));
    }
}
