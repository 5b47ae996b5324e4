//! What a model's outputs mean beyond class scores, from the sidecar's optional `"task"`:
//! a detector's head layout, or a segmenter's mask output. `subsetq eval --task` reads it.

use serde::{Deserialize, Serialize};

/// A detection or segmentation model's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Task {
    /// Boxes from a detection head.
    Detect {
        /// How the head's outputs become boxes.
        decoder: Decoder,
        /// A box counts as a detection from this score on.
        score_threshold: f32,
        /// Non-maximum suppression drops a box overlapping a better one of its class by
        /// more than this IoU.
        iou_threshold: f32,
    },
    /// A per-pixel foreground probability.
    Segment {
        /// The graph output holding it, `[N, 1, H, W]`.
        output: String,
        /// Foreground from this probability on.
        threshold: f32,
    },
}

/// How a detection head's outputs become boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Decoder {
    /// MediaPipe BlazeFace: per scale, a score logit (`scores[k]`, `[N, anchors, 1]`) and
    /// 16 values (`boxes[k]`, `[N, anchors, 16]`: centre offset x, y and size w, h in input
    /// pixels, then 6 key points) per anchor; anchors sit at the centres of a `grids[k]²`
    /// grid, `anchors_per_cell[k]` per cell, cells in row-major order.
    Blazeface {
        /// Score outputs, one per scale.
        scores: Vec<String>,
        /// Box outputs, one per scale.
        boxes: Vec<String>,
        /// Grid side per scale.
        grids: Vec<usize>,
        /// Anchors per grid cell per scale.
        anchors_per_cell: Vec<usize>,
    },
    /// NanoDet (generalized focal loss head): per scale, class scores after a sigmoid
    /// (`scores[k]`, `[N, cells, classes]`) and, per side (left, top, right, bottom), logits
    /// over `bins` distances 0, 1, … in strides (`boxes[k]`, `[N, cells, 4 · bins]`); cells of
    /// a grid of `input / strides[k]`, row-major, centred at `(x + 0.5) · stride`.
    Nanodet {
        /// Class-score outputs, one per scale.
        scores: Vec<String>,
        /// Box-distribution outputs, one per scale.
        boxes: Vec<String>,
        /// Input pixels per cell, per scale.
        strides: Vec<usize>,
        /// Distance bins per box side.
        bins: usize,
    },
}

impl Decoder {
    fn check(&self) -> Result<(), String> {
        let per_scale = |name: &str, lens: [usize; 4]| {
            if lens[0] == 0 || lens.iter().any(|&n| n != lens[0]) {
                Err(format!(
                    "{name} decoder: every per-scale list needs one entry per scale (got {})",
                    lens.map(|n| n.to_string()).join(", ")
                ))
            } else {
                Ok(())
            }
        };
        let positive = |name: &str, what: &str, v: &[usize]| {
            if v.iter().any(|&n| n == 0 || n > 4096) {
                Err(format!(
                    "{name} decoder: {what} must be 1..=4096, got {v:?}"
                ))
            } else {
                Ok(())
            }
        };
        match self {
            Decoder::Blazeface {
                scores,
                boxes,
                grids,
                anchors_per_cell,
            } => {
                let lens = [
                    scores.len(),
                    boxes.len(),
                    grids.len(),
                    anchors_per_cell.len(),
                ];
                per_scale("blazeface", lens)?;
                positive("blazeface", "grids", grids)?;
                positive("blazeface", "anchors_per_cell", anchors_per_cell)
            }
            Decoder::Nanodet {
                scores,
                boxes,
                strides,
                bins,
            } => {
                let lens = [scores.len(), boxes.len(), strides.len(), scores.len()];
                per_scale("nanodet", lens)?;
                positive("nanodet", "strides", strides)?;
                positive("nanodet", "bins", &[*bins])
            }
        }
    }
}

impl Task {
    /// The graph outputs the task reads, in the order its decoder takes them.
    pub fn outputs(&self) -> Vec<&str> {
        match self {
            Task::Detect {
                decoder:
                    Decoder::Blazeface { scores, boxes, .. } | Decoder::Nanodet { scores, boxes, .. },
                ..
            } => scores.iter().chain(boxes).map(String::as_str).collect(),
            Task::Segment { output, .. } => vec![output.as_str()],
        }
    }

    /// Checks the numbers a sidecar can get wrong.
    pub(crate) fn check(&self) -> Result<(), String> {
        let unit = |name: &str, v: f32| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("task {name} {v} is not in [0, 1]"))
            }
        };
        match self {
            Task::Detect {
                decoder,
                score_threshold,
                iou_threshold,
            } => {
                unit("score_threshold", *score_threshold)?;
                unit("iou_threshold", *iou_threshold)?;
                decoder.check()
            }
            Task::Segment { threshold, .. } => unit("threshold", *threshold),
        }
    }
}
