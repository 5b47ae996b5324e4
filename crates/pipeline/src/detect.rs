//! Detection and segmentation outputs compared with a reference model's: boxes decoded from
//! a detection head ([`decode`]), non-maximum suppression, mAP with the reference's
//! detections as ground truth ([`DetectAgreement`]) and mean mask IoU ([`MaskAgreement`]).
//!
//! No labelled detection or segmentation set is at hand offline, so the float model's own
//! detections (masks) stand in for the ground truth: the numbers say how much of the float
//! model's behaviour a quantized model keeps, not how good either is.

use serde::Serialize;
use subsetq_data::{Decoder, Task};

use crate::error::{PipelineError, Result};
use crate::eval::Named;

/// One box: class, score and corners `[x0, y0, x1, y1]` in input-relative units (0..1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Class index (0 for a one-class detector).
    pub class: usize,
    /// Confidence, 0..1.
    pub score: f32,
    /// `[x0, y0, x1, y1]`, x to the right and y down, relative to the input's width / height.
    pub corners: [f32; 4],
}

/// The lowest score of the boxes ranked for average precision: low enough that the ranking
/// reaches well past the operating threshold, as COCO's evaluation of every box does.
pub const CANDIDATE_MIN_SCORE: f32 = 0.05;

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Greedy per-class non-maximum suppression: best score first (ties: lower index first),
/// dropping every later box of its class that overlaps a kept one by more than `iou_threshold`.
pub fn nms(mut boxes: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    boxes.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in boxes {
        if !kept
            .iter()
            .any(|k| k.class == d.class && iou(&k.corners, &d.corners) > iou_threshold)
        {
            kept.push(d);
        }
    }
    kept
}

/// How much of a reference model's task outputs a model keeps.
#[derive(Debug, Clone, Copy)]
pub enum TaskAgreement {
    /// A detector's boxes.
    Detect(DetectAgreement),
    /// A segmenter's masks.
    Segment(MaskAgreement),
}

/// Compares `candidate`'s task outputs with `reference`'s (both in [`Task::outputs`] order,
/// for `[height, width]` inputs): the reference's boxes at the task's threshold against the
/// candidate's ranked from [`CANDIDATE_MIN_SCORE`], or the two masks.
pub fn agreement(
    task: &Task,
    reference: &[Named],
    candidate: &[Named],
    input: [usize; 2],
) -> Result<TaskAgreement> {
    match task {
        Task::Detect {
            score_threshold, ..
        } => {
            let truth = decode(task, reference, input, *score_threshold)?;
            let found = decode(task, candidate, input, CANDIDATE_MIN_SCORE)?;
            Ok(TaskAgreement::Detect(DetectAgreement::between(
                &truth,
                &found,
                *score_threshold,
            )?))
        }
        Task::Segment { threshold, .. } => {
            let (Some(truth), Some(mask)) = (reference.first(), candidate.first()) else {
                return Err(PipelineError::invalid("no mask output was computed"));
            };
            Ok(TaskAgreement::Segment(MaskAgreement::between(
                truth, mask, *threshold,
            )?))
        }
    }
}

/// Boxes kept per image before non-maximum suppression (the best-scoring ones).
const MAX_CANDIDATES: usize = 1000;
/// Boxes kept per image after it, as COCO's evaluation does.
const MAX_DETECTIONS: usize = 100;

/// The detections of every image from the task's outputs (`outputs` in [`Task::outputs`]
/// order) of a model fed `[height, width]` inputs: boxes scoring at least `min_score`, after
/// non-maximum suppression, at most 100 per image.
pub fn decode(
    task: &Task,
    outputs: &[Named],
    input: [usize; 2],
    min_score: f32,
) -> Result<Vec<Vec<Detection>>> {
    let Task::Detect {
        decoder,
        iou_threshold,
        ..
    } = task
    else {
        return Err(PipelineError::invalid("the model's task is not detection"));
    };
    let scales = outputs.len() / 2;
    if outputs.is_empty() || !outputs.len().is_multiple_of(2) {
        return Err(PipelineError::invalid(format!(
            "a detection head needs score and box outputs per scale, got {} outputs",
            outputs.len()
        )));
    }
    let (score_out, box_out) = outputs.split_at(scales);
    let images = score_out[0].values.len() / score_out[0].per_image();
    let mut per_image: Vec<Vec<Detection>> = vec![Vec::new(); images];
    for k in 0..scales {
        let (s, b) = (&score_out[k], &box_out[k]);
        let found = match decoder {
            Decoder::Blazeface {
                grids,
                anchors_per_cell,
                ..
            } => blazeface_scale(s, b, grids[k], anchors_per_cell[k], input, min_score)?,
            Decoder::Nanodet { strides, bins, .. } => {
                nanodet_scale(s, b, strides[k], *bins, input, min_score)?
            }
        };
        for (all, more) in per_image.iter_mut().zip(found) {
            all.extend(more);
        }
    }
    Ok(per_image
        .into_iter()
        .map(|mut found| {
            found.sort_by(|a, b| b.score.total_cmp(&a.score));
            found.truncate(MAX_CANDIDATES);
            let mut kept = nms(found, *iou_threshold);
            kept.truncate(MAX_DETECTIONS);
            kept
        })
        .collect())
}

/// One BlazeFace scale: a score logit and 16 values (centre offset, size in input pixels,
/// key points) per anchor, anchors at the centres of a `grid²` grid, `per_cell` per cell.
fn blazeface_scale(
    scores: &Named,
    boxes: &Named,
    grid: usize,
    per_cell: usize,
    input: [usize; 2],
    min_score: f32,
) -> Result<Vec<Vec<Detection>>> {
    let anchors = grid * grid * per_cell;
    if scores.per_image() != anchors
        || boxes.per_image() < anchors * 4
        || !boxes.per_image().is_multiple_of(anchors)
    {
        return Err(PipelineError::invalid(format!(
            "blazeface decoder: a {grid}x{grid} grid of {per_cell} anchors per cell has \
             {anchors} anchors, but {} has shape {:?} and {} has {:?}",
            scores.name, scores.shape, boxes.name, boxes.shape
        )));
    }
    let (height, width) = (input[0] as f32, input[1] as f32);
    let stride = boxes.per_image() / anchors;
    let images = scores.values.len() / anchors;
    Ok((0..images)
        .map(|i| {
            let values = boxes.image(i);
            let mut found = Vec::new();
            for (a, &logit) in scores.image(i).iter().enumerate() {
                let score = sigmoid(logit);
                if score.is_nan() || score < min_score {
                    continue;
                }
                let cell = a / per_cell;
                let cx = ((cell % grid) as f32 + 0.5) / grid as f32;
                let cy = ((cell / grid) as f32 + 0.5) / grid as f32;
                let v = &values[a * stride..a * stride + 4];
                let (x, y) = (cx + v[0] / width, cy + v[1] / height);
                let (w, h) = (v[2] / width, v[3] / height);
                found.push(Detection {
                    class: 0,
                    score,
                    corners: [x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0],
                });
            }
            found
        })
        .collect())
}

/// One NanoDet scale: per cell of the `input / stride` grid, class scores, and per box side
/// a softmax over `bins` distances whose expectation, in strides, is the side's distance from
/// the cell centre.
fn nanodet_scale(
    scores: &Named,
    boxes: &Named,
    stride: usize,
    bins: usize,
    input: [usize; 2],
    min_score: f32,
) -> Result<Vec<Vec<Detection>>> {
    let (rows, cols) = (input[0].div_ceil(stride), input[1].div_ceil(stride));
    let cells = rows * cols;
    let ok =
        scores.shape.len() == 2 && scores.shape[0] == cells && boxes.shape == [cells, 4 * bins];
    if !ok {
        return Err(PipelineError::invalid(format!(
            "nanodet decoder: stride {stride} on a {}x{} input has {cells} cells of 4 x {bins} \
             bins, but {} has shape {:?} and {} has {:?}",
            input[0], input[1], scores.name, scores.shape, boxes.name, boxes.shape
        )));
    }
    let classes = scores.shape[1];
    let (height, width) = (input[0] as f32, input[1] as f32);
    let images = scores.values.len() / scores.per_image();
    Ok((0..images)
        .map(|i| {
            let (s, b) = (scores.image(i), boxes.image(i));
            let mut found = Vec::new();
            for cell in 0..cells {
                let row = &s[cell * classes..(cell + 1) * classes];
                let mut sides: Option<[f32; 4]> = None;
                for (class, &score) in row.iter().enumerate() {
                    if score.is_nan() || score < min_score {
                        continue;
                    }
                    let d = *sides.get_or_insert_with(|| {
                        let logits = &b[cell * 4 * bins..(cell + 1) * 4 * bins];
                        std::array::from_fn(|side| {
                            expected_bin(&logits[side * bins..(side + 1) * bins]) * stride as f32
                        })
                    });
                    let cx = ((cell % cols) as f32 + 0.5) * stride as f32;
                    let cy = ((cell / cols) as f32 + 0.5) * stride as f32;
                    found.push(Detection {
                        class,
                        score,
                        corners: [
                            (cx - d[0]) / width,
                            (cy - d[1]) / height,
                            (cx + d[2]) / width,
                            (cy + d[3]) / height,
                        ],
                    });
                }
            }
            found
        })
        .collect())
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `Σ b · softmax(logits)_b`: the expected bin of a distance distribution.
fn expected_bin(logits: &[f32]) -> f32 {
    let top = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut sum, mut weighted) = (0.0f32, 0.0f32);
    for (b, &l) in logits.iter().enumerate() {
        let e = (l - top).exp();
        sum += e;
        weighted += e * b as f32;
    }
    weighted / sum
}

/// How well a model's detections reproduce a reference model's, over the same images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DetectAgreement {
    /// Images.
    pub n: usize,
    /// The reference's detections (at its score threshold): the ground truth.
    pub reference_boxes: usize,
    /// The model's detections at the same threshold.
    pub boxes: usize,
    /// Average precision at IoU 0.5, mean over the classes the reference detects.
    pub map50: f64,
    /// The same, averaged over IoU 0.5, 0.55, …, 0.95.
    pub map50_95: f64,
    /// Share of the reference's boxes that a detection of the model (at the threshold)
    /// matches at IoU ≥ 0.5.
    pub recall50: f64,
}

impl DetectAgreement {
    /// Compares `candidate` (every box from a low score on, ranked by score) with the
    /// `reference` boxes scoring at least `threshold`. Errors when the reference detects
    /// nothing, since there is then nothing to compare.
    pub fn between(
        reference: &[Vec<Detection>],
        candidate: &[Vec<Detection>],
        threshold: f32,
    ) -> Result<DetectAgreement> {
        if reference.len() != candidate.len() {
            return Err(PipelineError::invalid(format!(
                "detections of {} and {} images",
                reference.len(),
                candidate.len()
            )));
        }
        let truth: Vec<Vec<Detection>> = reference
            .iter()
            .map(|d| d.iter().copied().filter(|d| d.score >= threshold).collect())
            .collect();
        let reference_boxes = truth.iter().map(Vec::len).sum();
        if reference_boxes == 0 {
            return Err(PipelineError::invalid(format!(
                "the reference model detects nothing at score {threshold} on these {} images",
                reference.len()
            )));
        }
        let mut classes: Vec<usize> = truth.iter().flatten().map(|d| d.class).collect();
        classes.sort_unstable();
        classes.dedup();
        let map = |t: f32| {
            let aps: f64 = classes
                .iter()
                .map(|&c| average_precision(&truth, candidate, c, t))
                .sum();
            aps / classes.len() as f64
        };
        let thresholds: Vec<f32> = (0..10).map(|k| 0.5 + 0.05 * k as f32).collect();
        let map50_95 = thresholds.iter().map(|&t| map(t)).sum::<f64>() / thresholds.len() as f64;
        let kept: Vec<Vec<Detection>> = candidate
            .iter()
            .map(|d| d.iter().copied().filter(|d| d.score >= threshold).collect())
            .collect();
        let (matched, _) = match_boxes(&truth, &kept, None, 0.5);
        Ok(DetectAgreement {
            n: reference.len(),
            reference_boxes,
            boxes: kept.iter().map(Vec::len).sum(),
            map50: map(0.5),
            map50_95,
            recall50: matched as f64 / reference_boxes as f64,
        })
    }
}

/// Greedy matching in score order, across images: each detection (of `class`, or of any
/// class with `None`; matched only within its class) takes the best-overlapping unmatched
/// truth box at IoU ≥ `t`. Returns the matched count and, per detection in score order,
/// whether it matched.
fn match_boxes(
    truth: &[Vec<Detection>],
    found: &[Vec<Detection>],
    class: Option<usize>,
    t: f32,
) -> (usize, Vec<bool>) {
    let mut ranked: Vec<(usize, &Detection)> = found
        .iter()
        .enumerate()
        .flat_map(|(i, ds)| ds.iter().map(move |d| (i, d)))
        .filter(|(_, d)| class.is_none_or(|c| d.class == c))
        .collect();
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score).then(a.0.cmp(&b.0)));
    let mut taken: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.len()]).collect();
    let mut hits = Vec::with_capacity(ranked.len());
    let mut matched = 0;
    for (i, d) in ranked {
        let best = truth[i]
            .iter()
            .enumerate()
            .filter(|(j, g)| !taken[i][*j] && g.class == d.class)
            .map(|(j, g)| (j, iou(&g.corners, &d.corners)))
            .filter(|&(_, o)| o >= t)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, _)) = best {
            taken[i][j] = true;
            matched += 1;
        }
        hits.push(best.is_some());
    }
    (matched, hits)
}

/// COCO-style average precision of `found` against `truth` for one class at IoU `t`: the
/// precision envelope sampled at the 101 recall points 0, 0.01, …, 1.
fn average_precision(
    truth: &[Vec<Detection>],
    found: &[Vec<Detection>],
    class: usize,
    t: f32,
) -> f64 {
    let total = truth.iter().flatten().filter(|d| d.class == class).count();
    if total == 0 {
        return 0.0;
    }
    let (_, hits) = match_boxes(truth, found, Some(class), t);
    let mut precision = Vec::with_capacity(hits.len());
    let mut recall = Vec::with_capacity(hits.len());
    let mut tp = 0usize;
    for (k, &hit) in hits.iter().enumerate() {
        tp += usize::from(hit);
        precision.push(tp as f64 / (k + 1) as f64);
        recall.push(tp as f64 / total as f64);
    }
    // Envelope: the best precision at this recall or any higher one.
    for k in (0..precision.len().saturating_sub(1)).rev() {
        precision[k] = precision[k].max(precision[k + 1]);
    }
    let mut sum = 0.0;
    let mut k = 0;
    for r in (0..=100).map(|r| r as f64 / 100.0) {
        while k < recall.len() && recall[k] < r - 1e-12 {
            k += 1;
        }
        if k < recall.len() {
            sum += precision[k];
        }
    }
    sum / 101.0
}

/// How well a segmenter's masks reproduce a reference's, over the same images.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MaskAgreement {
    /// Images.
    pub n: usize,
    /// Images whose reference mask has foreground: the ones scored.
    pub scored: usize,
    /// Mean over the scored images of the IoU of the two foreground masks.
    pub mask_iou: f64,
    /// Share of all pixels on which the masks agree.
    pub pixel_agreement: f64,
}

impl MaskAgreement {
    /// Compares `candidate` with `reference` (each `n` masks of probabilities, one after
    /// another), foreground at `threshold`.
    pub fn between(reference: &Named, candidate: &Named, threshold: f32) -> Result<MaskAgreement> {
        if reference.shape != candidate.shape || reference.values.len() != candidate.values.len() {
            return Err(PipelineError::invalid(format!(
                "masks of shapes {:?} and {:?}",
                reference.shape, candidate.shape
            )));
        }
        let per = reference.per_image();
        let n = reference.values.len() / per.max(1);
        let (mut scored, mut iou_sum, mut same) = (0usize, 0.0f64, 0usize);
        for i in 0..n {
            let (mut inter, mut union, mut truth) = (0usize, 0usize, 0usize);
            for (r, c) in reference.image(i).iter().zip(candidate.image(i)) {
                let (r, c) = (*r >= threshold, *c >= threshold);
                inter += usize::from(r && c);
                union += usize::from(r || c);
                truth += usize::from(r);
                same += usize::from(r == c);
            }
            if truth > 0 {
                scored += 1;
                iou_sum += inter as f64 / union as f64;
            }
        }
        if scored == 0 {
            return Err(PipelineError::invalid(format!(
                "the reference model's masks are empty at {threshold} on all {n} images"
            )));
        }
        Ok(MaskAgreement {
            n,
            scored,
            mask_iou: iou_sum / scored as f64,
            pixel_agreement: same as f64 / (n * per).max(1) as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(score: f32, corners: [f32; 4]) -> Detection {
        Detection {
            class: 0,
            score,
            corners,
        }
    }

    #[test]
    fn nanodet_cells_decode_to_boxes_around_their_centres() {
        // A 16x8 input at stride 8: 2 x 1 cells, 2 classes, 3 bins. Cell 1 scores class 1;
        // its left side puts all weight on bin 2 (16 px), the others on bin 0 / 1 evenly.
        let scores = Named {
            name: "cls".into(),
            shape: vec![2, 2],
            values: vec![0.01, 0.02, 0.1, 0.9],
        };
        let big = 50.0;
        let mut logits = vec![0.0f32; 2 * 12];
        logits[12 + 2] = big; // cell 1, left: bin 2
        logits[12 + 3] = big; // top: bin 0
        logits[12 + 6] = big; // right: bins 0 and 1 equally
        logits[12 + 7] = big;
        logits[12 + 10] = big; // bottom: bin 1
        let boxes = Named {
            name: "box".into(),
            shape: vec![2, 12],
            values: logits,
        };
        let task = Task::Detect {
            decoder: Decoder::Nanodet {
                scores: vec!["cls".into()],
                boxes: vec!["box".into()],
                strides: vec![8],
                bins: 3,
            },
            score_threshold: 0.5,
            iou_threshold: 0.5,
        };
        let found = decode(&task, &[scores, boxes], [8, 16], 0.05).unwrap();
        assert_eq!(found.len(), 1);
        let classes: Vec<(usize, f32)> = found[0].iter().map(|d| (d.class, d.score)).collect();
        assert_eq!(classes, [(1, 0.9), (0, 0.1)]);
        // Centre (12, 4); left 16, top 0, right 4, bottom 8 pixels; 16 wide, 8 high.
        let want = [(12.0 - 16.0) / 16.0, 0.5, (12.0 + 4.0) / 16.0, 1.5];
        for (got, want) in found[0][0].corners.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{:?}", found[0][0].corners);
        }
    }

    #[test]
    fn iou_of_boxes() {
        let a = [0.0, 0.0, 2.0, 2.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[1.0, 0.0, 3.0, 2.0]), 2.0 / 6.0);
        assert_eq!(iou(&a, &[2.0, 2.0, 3.0, 3.0]), 0.0);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_class() {
        let boxes = vec![
            det(0.6, [0.0, 0.0, 1.0, 1.0]),
            det(0.9, [0.05, 0.0, 1.05, 1.0]),
            det(0.8, [2.0, 2.0, 3.0, 3.0]),
            Detection {
                class: 1,
                ..det(0.7, [0.0, 0.0, 1.0, 1.0])
            },
        ];
        let kept = nms(boxes, 0.3);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, [0.9, 0.8, 0.7]);
    }

    #[test]
    fn a_model_agrees_fully_with_itself_and_less_with_a_shifted_copy() {
        let reference = vec![
            vec![
                det(0.9, [0.0, 0.0, 0.4, 0.4]),
                det(0.8, [0.5, 0.5, 0.9, 0.9]),
            ],
            vec![
                det(0.7, [0.1, 0.1, 0.3, 0.3]),
                det(0.2, [0.6, 0.6, 0.7, 0.7]),
            ],
        ];
        let same = DetectAgreement::between(&reference, &reference, 0.5).unwrap();
        assert_eq!(same.reference_boxes, 3);
        assert_eq!((same.map50, same.map50_95, same.recall50), (1.0, 1.0, 1.0));

        // The second image's box moves so that IoU = 0.155 / 0.245 = 0.63: a hit at IoU
        // 0.5, 0.55 and 0.6. The 0.2 box is below the threshold in the truth: a false
        // positive ranked last.
        let mut moved = reference.clone();
        moved[1][0].corners = [0.1 + 0.045, 0.1, 0.3 + 0.045, 0.3];
        let o = iou(&reference[1][0].corners, &moved[1][0].corners);
        assert!((o - 0.155 / 0.245).abs() < 1e-5, "{o}");
        let d = DetectAgreement::between(&reference, &moved, 0.5).unwrap();
        assert_eq!((d.map50, d.recall50), (1.0, 1.0));
        // At the 7 thresholds from 0.65 on, two of three boxes match, both ranked first:
        // precision 1 up to recall 2/3, which covers 67 of the 101 recall points.
        let partial = 67.0 / 101.0;
        let want = (3.0 + 7.0 * partial) / 10.0;
        assert!((d.map50_95 - want).abs() < 1e-9, "{} vs {want}", d.map50_95);

        // Missing every box: AP 0; a reference with nothing detected is an error.
        let none = vec![Vec::new(), Vec::new()];
        let d = DetectAgreement::between(&reference, &none, 0.5).unwrap();
        assert_eq!((d.map50, d.recall50, d.boxes), (0.0, 0.0, 0));
        assert!(DetectAgreement::between(&none, &reference, 0.5).is_err());
    }

    #[test]
    fn precision_drops_with_false_positives_ranked_first() {
        // One truth box; the model's best box misses it, its second hits: precision 1/2 at
        // recall 1, so AP 0.5 at every recall point.
        let truth = vec![vec![det(0.9, [0.0, 0.0, 0.5, 0.5])]];
        let found = vec![vec![
            det(0.9, [0.6, 0.6, 0.9, 0.9]),
            det(0.8, [0.0, 0.0, 0.5, 0.5]),
        ]];
        let d = DetectAgreement::between(&truth, &found, 0.5).unwrap();
        assert!((d.map50 - 0.5).abs() < 1e-12, "{}", d.map50);
        assert_eq!(d.recall50, 1.0);
    }

    fn masks(values: &[f32], images: usize) -> Named {
        Named {
            name: "mask".into(),
            shape: vec![1, 1, values.len() / images],
            values: values.to_vec(),
        }
    }

    #[test]
    fn mask_iou_over_images_with_foreground() {
        // Image 0: truth {0, 1}, candidate {1, 2}: IoU 1/3. Image 1: empty truth, not scored.
        let reference = masks(&[0.9, 0.8, 0.1, 0.0, 0.1, 0.2, 0.3, 0.4], 2);
        let candidate = masks(&[0.2, 0.7, 0.6, 0.0, 0.1, 0.2, 0.3, 0.9], 2);
        let m = MaskAgreement::between(&reference, &candidate, 0.5).unwrap();
        assert_eq!((m.n, m.scored), (2, 1));
        assert!((m.mask_iou - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.pixel_agreement, 5.0 / 8.0);
        let empty = masks(&[0.0; 8], 2);
        assert!(MaskAgreement::between(&empty, &candidate, 0.5).is_err());
    }
}
