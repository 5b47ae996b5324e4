//! Cutting a graph into reconstruction blocks, and extracting a block as a model of its own.
//!
//! A *cut* is a tensor that every path from the graph input to the output passes through:
//! after some node, it is the only non-constant value still needed later. Between two cuts
//! lies a segment of nodes. A block is a segment with weight layers plus the weight-free
//! segments after it (activations, pooling): a residual block (conv, conv, add) when the graph
//! has them, else one conv / gemm layer with what follows it, as BRECQ partitions networks.
//!
//! A graph with several outputs (a detector's score and box heads) has a *trunk*, the nodes
//! that lead to the output with the most of them, and *heads*: the nodes that lead only to
//! one of the other outputs. Cuts are found on the trunk; each head with weights is a block
//! of its own, from the one trunk value it reads to its output. Outputs whose heads share
//! nodes (one conv split into scores and boxes) are one head, ending at the first value after
//! its last weight layer.
//!
//! Long skip connections (a U-Net's encoder feeding its decoder) leave no cut for many layers.
//! A trunk block of more than [`MAX_BLOCK_LAYERS`] weight layers is split into *parts*: cuts
//! are looked for again with the uses that reach more than that many layers ahead left out, so
//! that residual blocks still end at their Add; a part that then reads only its input stays
//! whole, one that also reads a skip (a decoder stage) becomes one part per weight layer.

use std::collections::{HashMap, HashSet};

use crate::pb::{GraphProto, ModelProto, NodeProto, ValueInfoProto};
use crate::{Model, OnnxError, Result};

/// Trunk blocks with more weight layers than this are split into parts.
pub const MAX_BLOCK_LAYERS: usize = 8;

/// Where a block sits, which says where the blocks after it read their inputs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// Between two cuts of the trunk: the block after it reads its output.
    Trunk,
    /// A side branch from a trunk value to a graph output. The blocks after it continue from
    /// its input, not from its output.
    Head,
    /// A piece of a trunk block too large to learn as one: a run of its layers that reads one
    /// value, or a single layer. Every value of the trunk block is computed from that block's
    /// input, so each part's input is computed from there, and the block after the last part
    /// reads the trunk block's output.
    Part,
}

/// A run of nodes between two cut tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The tensor the block reads (a graph input or a cut).
    pub input: String,
    /// The tensor the block produces (a cut or the graph output).
    pub output: String,
    /// Indices of its nodes in the graph, ascending.
    pub nodes: Vec<usize>,
    /// Weight initializers of its Conv / Gemm / MatMul nodes, in node order.
    pub weights: Vec<String>,
    /// Trunk, head or part.
    pub kind: BlockKind,
}

fn is_weight_op(n: &NodeProto) -> bool {
    matches!(n.op_type(), "Conv" | "Gemm" | "MatMul") && matches!(n.domain(), "" | "ai.onnx")
}

/// The graph's initializer names, and those with the outputs of its `Constant` nodes.
fn constant_names(g: &GraphProto) -> (HashSet<&str>, HashSet<&str>) {
    let initializers: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let mut constants = initializers.clone();
    for n in g.node.iter().filter(|n| n.op_type() == "Constant") {
        constants.extend(n.output.iter().map(String::as_str));
    }
    (initializers, constants)
}

/// The weight initializers of the Conv / Gemm / MatMul nodes among `nodes`, in node order.
fn layer_weights(g: &GraphProto, nodes: &[usize], initializers: &HashSet<&str>) -> Vec<String> {
    nodes
        .iter()
        .map(|&i| &g.node[i])
        .filter(|n| is_weight_op(n))
        .filter_map(|n| n.input.get(1).filter(|w| initializers.contains(w.as_str())))
        .cloned()
        .collect()
}

/// A head of a multi-output graph: the nodes that lead only to `output`, reading `input`.
struct Head {
    input: String,
    output: String,
    nodes: Vec<usize>,
}

/// The nodes `output` is computed from (excluding `Constant` nodes), ascending.
fn ancestors(g: &GraphProto, output: &str) -> Vec<usize> {
    let mut needed: HashSet<&str> = HashSet::from([output]);
    let mut nodes = Vec::new();
    for (i, n) in g.node.iter().enumerate().rev() {
        if n.op_type() == "Constant" || !n.output.iter().any(|o| needed.contains(o.as_str())) {
            continue;
        }
        needed.extend(n.input.iter().map(String::as_str).filter(|v| !v.is_empty()));
        nodes.push(i);
    }
    nodes.reverse();
    nodes
}

/// The trunk's output (the graph output computed from the most nodes; the first of those on a
/// tie) and the heads leading to the other outputs. A one-output graph is all trunk.
fn split_heads(g: &GraphProto) -> Result<(&str, Vec<Head>)> {
    let outputs: Vec<&str> = g.output.iter().map(|o| o.name()).collect();
    if let [only] = outputs.as_slice() {
        return Ok((only, Vec::new()));
    }
    let from: Vec<Vec<usize>> = outputs.iter().map(|o| ancestors(g, o)).collect();
    let trunk_at = (0..outputs.len())
        .max_by_key(|&k| (from[k].len(), std::cmp::Reverse(k)))
        .unwrap_or(0);
    let trunk: HashSet<usize> = from[trunk_at].iter().copied().collect();
    let (initializers, constants) = constant_names(g);
    // Outputs whose non-trunk nodes overlap (a shared conv split into scores and boxes) form
    // one head.
    let mut groups: Vec<(Vec<&str>, Vec<usize>)> = Vec::new();
    for (k, &output) in outputs.iter().enumerate().filter(|&(k, _)| k != trunk_at) {
        let mut nodes: Vec<usize> = from[k]
            .iter()
            .copied()
            .filter(|i| !trunk.contains(i))
            .collect();
        let mut names = vec![output];
        while let Some(j) = groups
            .iter()
            .position(|(_, other)| other.iter().any(|i| nodes.contains(i)))
        {
            let (more_names, more_nodes) = groups.remove(j);
            names.splice(0..0, more_names);
            nodes.extend(more_nodes);
        }
        nodes.sort_unstable();
        nodes.dedup();
        groups.push((names, nodes));
    }
    let mut heads: Vec<Head> = Vec::new();
    for (names, nodes) in groups {
        let made: HashSet<&str> = nodes
            .iter()
            .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
            .collect();
        let mut reads: Vec<&str> = nodes
            .iter()
            .flat_map(|&i| g.node[i].input.iter().map(String::as_str))
            .filter(|v| !v.is_empty() && !made.contains(v) && !constants.contains(v))
            .collect();
        reads.sort_unstable();
        reads.dedup();
        let outputs = names.join(", ");
        let input = match reads.as_slice() {
            [] if nodes.is_empty() => continue, // the output is a trunk value itself
            [input] => input.to_string(),
            _ => {
                return Err(OnnxError::Graph(format!(
                "the head to output {outputs} reads {} trunk values ({}); a head block needs one",
                reads.len(),
                reads.join(", ")
            )))
            }
        };
        let (output, nodes) = match names.as_slice() {
            [one] => (one.to_string(), nodes),
            _ => head_cut(g, &nodes, &names, &initializers).ok_or_else(|| {
                OnnxError::Graph(format!(
                    "the head to outputs {outputs} has no single value after its last \
                     weight layer that computes them all"
                ))
            })?,
        };
        heads.push(Head {
            input,
            output,
            nodes,
        });
    }
    Ok((outputs[trunk_at], heads))
}

/// The head of several outputs as a block of one output: the first value, after its last
/// weight layer, from which every output follows (e.g. the conv before a Split into scores
/// and boxes), and the nodes up to it.
fn head_cut(
    g: &GraphProto,
    nodes: &[usize],
    outputs: &[&str],
    initializers: &HashSet<&str>,
) -> Option<(String, Vec<usize>)> {
    let last_weight = nodes
        .iter()
        .rposition(|&i| !layer_weights(g, &[i], initializers).is_empty())?;
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (at, &i) in nodes.iter().enumerate() {
        for v in &g.node[i].input {
            last_use.insert(v.as_str(), at);
        }
    }
    for o in outputs {
        last_use.insert(o, nodes.len());
    }
    let mut live: HashSet<&str> = HashSet::new();
    for (at, &i) in nodes.iter().enumerate() {
        live.extend(
            g.node[i]
                .output
                .iter()
                .map(String::as_str)
                .filter(|o| last_use.get(o).is_some_and(|&u| u > at)),
        );
        live.retain(|v| last_use.get(v).is_some_and(|&u| u > at));
        if at >= last_weight && live.len() == 1 {
            let value = live.iter().next()?.to_string();
            return Some((value, nodes[..=at].to_vec()));
        }
    }
    None
}

/// The trunk blocks with each head that has weights inserted where its input is at hand:
/// after the block that outputs it, else before the block that computes it.
fn place_heads(
    g: &GraphProto,
    trunk: Vec<Block>,
    heads: Vec<Head>,
    initializers: &HashSet<&str>,
) -> Result<Vec<Block>> {
    let mut after: Vec<Vec<Block>> = vec![Vec::new(); trunk.len() + 1];
    for h in heads {
        let weights = layer_weights(g, &h.nodes, initializers);
        if weights.is_empty() {
            continue;
        }
        let computes = |b: &Block| b.nodes.iter().any(|&i| g.node[i].output.contains(&h.input));
        // Slot k holds the heads that go before trunk block k (k = len: after the last).
        let slot = match trunk.iter().position(|b| b.output == h.input) {
            Some(k) => k + 1,
            None => trunk.iter().position(computes).unwrap_or(0),
        };
        after[slot].push(Block {
            input: h.input,
            output: h.output,
            nodes: h.nodes,
            weights,
            kind: BlockKind::Head,
        });
    }
    let mut slots = after.into_iter();
    let mut blocks = Vec::new();
    for b in trunk {
        blocks.extend(slots.next().unwrap_or_default());
        blocks.push(b);
    }
    blocks.extend(slots.flatten());
    Ok(blocks)
}

/// A trunk block with many weight layers as parts (see the module doc). Head nodes are not
/// uses here, as for the cuts.
fn split_into_parts(
    g: &GraphProto,
    block: &Block,
    in_head: &HashSet<usize>,
    initializers: &HashSet<&str>,
    constants: &HashSet<&str>,
) -> Vec<Block> {
    let is_weight =
        |i: usize| is_weight_op(&g.node[i]) && !layer_weights(g, &[i], initializers).is_empty();
    // Weight layers up to and including each node, and where each value is made.
    let mut layers_to: HashMap<usize, usize> = HashMap::new();
    let mut made_at: HashMap<&str, usize> = HashMap::new();
    let mut count = 0;
    for &i in &block.nodes {
        count += usize::from(is_weight(i));
        layers_to.insert(i, count);
        made_at.extend(g.node[i].output.iter().map(|o| (o.as_str(), i)));
    }
    let layers_before = |v: &str| made_at.get(v).map_or(0, |d| layers_to[d]);
    // Uses within reach: a skip to a node more than MAX_BLOCK_LAYERS layers on is left out.
    let end = g.node.len();
    let mut last_use: HashMap<&str, usize> = HashMap::from([(block.output.as_str(), end)]);
    for &i in block.nodes.iter().filter(|i| !in_head.contains(i)) {
        for v in g.node[i].input.iter().filter(|v| !v.is_empty()) {
            if layers_to[&i] - layers_before(v) <= MAX_BLOCK_LAYERS {
                last_use.insert(v.as_str(), i);
            }
        }
    }
    // The cuts of the block with those uses only, as in `Model::blocks`.
    let mut live: HashSet<&str> = HashSet::from([block.input.as_str()]);
    let mut cut = block.input.clone();
    let mut runs: Vec<(String, String, Vec<usize>)> = Vec::new();
    let mut current = Vec::new();
    for &i in &block.nodes {
        current.push(i);
        live.extend(
            g.node[i]
                .output
                .iter()
                .map(String::as_str)
                .filter(|o| last_use.get(o).is_some_and(|&u| u > i)),
        );
        live.retain(|v| last_use.get(v).is_some_and(|&u| u > i) && !constants.contains(v));
        if let (1, Some(&v)) = (live.len(), live.iter().next()) {
            let nodes = std::mem::take(&mut current);
            match runs.last_mut() {
                // Weight-free nodes go with the run before them (its activation, pooling).
                Some(run) if !nodes.iter().any(|&n| is_weight(n)) => {
                    run.1 = v.to_string();
                    run.2.extend(nodes);
                }
                _ => runs.push((cut.clone(), v.to_string(), nodes)),
            }
            cut = v.to_string();
        }
    }
    if let Some(run) = runs.last_mut() {
        run.2.extend(current);
    }
    let part = |input: &str, output: &str, nodes: Vec<usize>| Block {
        input: input.to_string(),
        output: output.to_string(),
        weights: layer_weights(g, &nodes, initializers),
        nodes,
        kind: BlockKind::Part,
    };
    let mut parts = Vec::new();
    for (input, output, nodes) in runs {
        if !nodes.iter().any(|&n| is_weight(n)) {
            continue;
        }
        let made: HashSet<&str> = nodes
            .iter()
            .flat_map(|&i| g.node[i].output.iter().map(String::as_str))
            .collect();
        let reads_only_input = nodes
            .iter()
            .flat_map(|&i| g.node[i].input.iter().map(String::as_str))
            .filter(|v| !v.is_empty() && !made.contains(v) && !constants.contains(v))
            .all(|v| v == input);
        if reads_only_input {
            parts.push(part(&input, &output, nodes));
            continue;
        }
        // One part per weight layer, with the one-input nodes that only it feeds.
        for (at, &w) in nodes.iter().enumerate().filter(|&(_, &n)| is_weight(n)) {
            let mut chain = vec![w];
            let mut value = g.node[w]
                .output
                .first()
                .map(String::as_str)
                .unwrap_or_default();
            for &next in &nodes[at + 1..] {
                let n = &g.node[next];
                let readers = g.node.iter().filter(|m| m.input.iter().any(|v| v == value));
                let only_reader = readers.count() == 1 && n.input.iter().any(|v| v == value);
                let one_input = n
                    .input
                    .iter()
                    .filter(|v| !v.is_empty() && !constants.contains(v.as_str()))
                    .count()
                    == 1;
                let is_output = g.output.iter().any(|o| o.name() == value);
                if !only_reader || !one_input || is_weight_op(n) || n.output.len() != 1 || is_output
                {
                    break;
                }
                chain.push(next);
                value = n.output[0].as_str();
            }
            let input = g.node[w]
                .input
                .first()
                .map(String::as_str)
                .unwrap_or_default();
            parts.push(part(input, value, chain));
        }
    }
    parts
}

impl Model {
    /// The reconstruction blocks of the main graph, in order: trunk blocks in graph order (one
    /// of more than [`MAX_BLOCK_LAYERS`] weight layers as its parts), each head right after the
    /// trunk block that outputs the value it reads (or before the one that computes it
    /// inside). Nodes before the first weight layer form no block (they have
    /// no weights to learn). Errors when the graph does not have exactly one non-initializer
    /// input and at least one output, or when a head reads more than one trunk value.
    pub fn blocks(&self) -> Result<Vec<Block>> {
        let g = self.graph()?;
        let (initializers, constants) = constant_names(g);
        let inputs: Vec<&str> = g
            .input
            .iter()
            .map(|v| v.name())
            .filter(|n| !initializers.contains(n))
            .collect();
        let input = match (inputs.as_slice(), g.output.is_empty()) {
            ([i], false) => *i,
            _ => {
                return Err(OnnxError::Graph(format!(
                    "blocks need one graph input and at least one output; the graph has {} and {}",
                    inputs.len(),
                    g.output.len()
                )))
            }
        };
        let (output, heads) = split_heads(g)?;
        let in_head: HashSet<usize> = heads.iter().flat_map(|h| h.nodes.iter().copied()).collect();

        // Last trunk node that reads each value (the trunk output is read "after" every node).
        let end = g.node.len();
        let mut last_use: HashMap<&str, usize> = HashMap::new();
        for (i, n) in g
            .node
            .iter()
            .enumerate()
            .filter(|(i, _)| !in_head.contains(i))
        {
            for v in n.input.iter().filter(|v| !v.is_empty()) {
                last_use.insert(v.as_str(), i);
            }
        }
        last_use.insert(output, end);

        // Walk the trunk, keeping the set of live non-constant values.
        let mut live: HashSet<&str> = HashSet::from([input]);
        let mut cut = input.to_string();
        let mut segments: Vec<(String, String, Vec<usize>)> = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        for (i, n) in g.node.iter().enumerate() {
            if n.op_type() == "Constant" || in_head.contains(&i) {
                continue;
            }
            current.push(i);
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if last_use.get(o.as_str()).is_some_and(|&u| u > i) {
                    live.insert(o.as_str());
                }
            }
            live.retain(|v| last_use.get(v).is_some_and(|&u| u > i));
            live.retain(|v| !constants.contains(v));
            if live.len() == 1 {
                let Some(&v) = live.iter().next() else {
                    unreachable!("one live value")
                };
                segments.push((cut.clone(), v.to_string(), std::mem::take(&mut current)));
                cut = v.to_string();
            }
        }
        if !current.is_empty() {
            return Err(OnnxError::Graph(format!(
                "nodes after the last cut {cut} do not lead to the output {output}"
            )));
        }

        let mut blocks: Vec<Block> = Vec::new();
        for (from, to, nodes) in segments {
            let weights = layer_weights(g, &nodes, &initializers);
            match blocks.last_mut() {
                Some(b) if weights.is_empty() => {
                    b.output = to;
                    b.nodes.extend(nodes);
                }
                None if weights.is_empty() => {}
                _ => blocks.push(Block {
                    input: from,
                    output: to,
                    nodes,
                    weights,
                    kind: BlockKind::Trunk,
                }),
            }
        }
        let blocks = blocks
            .into_iter()
            .flat_map(|b| match b.weights.len() > MAX_BLOCK_LAYERS {
                true => split_into_parts(g, &b, &in_head, &initializers, &constants),
                false => vec![b],
            })
            .collect();
        place_heads(g, blocks, heads, &initializers)
    }

    /// The nodes that compute `to` from `from` alone (with initializers and constants): the
    /// span between two cuts, e.g. from the graph input to a block's input, as a block to
    /// extract. Errors when `to` needs a value that does not come from `from`.
    pub fn span(&self, from: &str, to: &str) -> Result<Block> {
        let g = self.graph()?;
        let (initializers, mut known) = constant_names(g);
        known.insert(from);
        // Walk back from `to`, taking every node whose output is still needed.
        let mut needed: HashSet<&str> = HashSet::from([to]);
        let mut nodes = Vec::new();
        for (i, n) in g.node.iter().enumerate().rev() {
            if n.op_type() == "Constant" || !n.output.iter().any(|o| needed.contains(o.as_str())) {
                continue;
            }
            for o in &n.output {
                needed.remove(o.as_str());
            }
            needed.extend(
                n.input
                    .iter()
                    .map(String::as_str)
                    .filter(|v| !v.is_empty() && !known.contains(v)),
            );
            nodes.push(i);
        }
        if let Some(v) = needed.iter().min() {
            return Err(OnnxError::Graph(format!(
                "{to} is not computed from {from} alone: it also needs {v}"
            )));
        }
        nodes.reverse();
        let weights = layer_weights(g, &nodes, &initializers);
        Ok(Block {
            input: from.to_string(),
            output: to.to_string(),
            nodes,
            weights,
            kind: BlockKind::Trunk,
        })
    }

    /// The block as a model of its own: its nodes (and the `Constant` nodes they read), the
    /// initializers they use, `block.input` as the only graph input and `block.output` as the
    /// only output. Shapes are left to the runtime.
    pub fn extract_block(&self, block: &Block) -> Result<Model> {
        let g = self.graph()?;
        let mut nodes: Vec<NodeProto> = Vec::new();
        let mut used: HashSet<&str> = HashSet::new();
        for &i in &block.nodes {
            let n = g
                .node
                .get(i)
                .ok_or_else(|| OnnxError::Graph(format!("block node index {i} is out of range")))?;
            used.extend(n.input.iter().map(String::as_str));
        }
        // Constant nodes first, so that every value is produced before it is read.
        for n in &g.node {
            if n.op_type() == "Constant" && n.output.iter().any(|o| used.contains(o.as_str())) {
                nodes.push(n.clone());
            }
        }
        nodes.extend(block.nodes.iter().map(|&i| g.node[i].clone()));
        let value = |name: &str| ValueInfoProto {
            name: Some(name.to_string()),
            ..Default::default()
        };
        let graph = GraphProto {
            name: Some(format!("block {} -> {}", block.input, block.output)),
            node: nodes,
            initializer: g
                .initializer
                .iter()
                .filter(|t| used.contains(t.name()))
                .cloned()
                .collect(),
            input: vec![value(&block.input)],
            output: vec![value(&block.output)],
            ..Default::default()
        };
        Ok(Model::from_proto(ModelProto {
            graph: Some(graph),
            ..self.proto.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::TensorProto;
    use crate::testutil::{float_tensor, node};

    /// A model of `nodes` and `initializer` reading graph input `x`, with `outputs`.
    fn graph_model(
        nodes: Vec<NodeProto>,
        initializer: Vec<TensorProto>,
        outputs: &[&str],
    ) -> Model {
        let value = |n: &str| ValueInfoProto {
            name: Some(n.into()),
            ..Default::default()
        };
        let graph = GraphProto {
            node: nodes,
            initializer,
            input: vec![value("x")],
            output: outputs.iter().map(|o| value(o)).collect(),
            ..Default::default()
        };
        Model::from_proto(ModelProto {
            graph: Some(graph),
            ..Default::default()
        })
    }

    /// x → conv a → relu → [conv b → relu → conv c] + (shortcut) → add → relu → pool → gemm.
    fn residual_net() -> Model {
        let nodes = vec![
            node("Conv", "a", &["x", "wa"], &["a"]),
            node("Relu", "ra", &["a"], &["a1"]),
            node("Conv", "b", &["a1", "wb"], &["b"]),
            node("Relu", "rb", &["b"], &["b1"]),
            node("Conv", "c", &["b1", "wc"], &["c"]),
            node("Add", "add", &["c", "a1"], &["s"]),
            node("Relu", "rs", &["s"], &["s1"]),
            node("GlobalAveragePool", "pool", &["s1"], &["p"]),
            node("Flatten", "flat", &["p"], &["f"]),
            node("Gemm", "fc", &["f", "wf"], &["y"]),
        ];
        let initializer = ["wa", "wb", "wc", "wf"]
            .iter()
            .map(|w| float_tensor(w, &[2, 2, 1, 1], true))
            .collect();
        graph_model(nodes, initializer, &["y"])
    }

    #[test]
    fn residual_blocks_and_single_layers() {
        let blocks = residual_net().blocks().unwrap();
        let summary: Vec<(&str, &str, Vec<&str>)> = blocks
            .iter()
            .map(|b| {
                (
                    b.input.as_str(),
                    b.output.as_str(),
                    b.weights.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("x", "a1", vec!["wa"]),
                ("a1", "f", vec!["wb", "wc"]),
                ("f", "y", vec!["wf"]),
            ]
        );
        assert_eq!(blocks[1].nodes, vec![2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn extracted_block_is_a_model_of_its_own() {
        let m = residual_net();
        let blocks = m.blocks().unwrap();
        let sub = m.extract_block(&blocks[1]).unwrap();
        let g = sub.graph().unwrap();
        assert_eq!(g.input[0].name(), "a1");
        assert_eq!(g.output[0].name(), "f");
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        assert_eq!(inits, vec!["wb", "wc"]);
        assert_eq!(g.node.len(), 7);
        // Its own blocks: the whole of it is one block.
        let inner = sub.blocks().unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].weights, vec!["wb", "wc"]);
    }

    #[test]
    fn spans_run_from_one_cut_to_another() {
        let m = residual_net();
        let blocks = m.blocks().unwrap();
        // A block is the span between its cuts.
        for b in &blocks {
            assert_eq!(&m.span(&b.input, &b.output).unwrap(), b);
        }
        let both = m.span("x", "f").unwrap();
        assert_eq!(both.nodes, (0..9).collect::<Vec<_>>());
        assert_eq!(both.weights, vec!["wa", "wb", "wc"]);
        // Not a cut: the Add also reads a1, which comes from the graph input.
        let err = m.span("b1", "s").unwrap_err().to_string();
        assert!(
            err.contains("s is not computed from b1 alone: it also needs x"),
            "{err}"
        );
    }

    /// A detector's shape: a trunk with two score / box head pairs, the nodes of the earlier
    /// scale's heads listed last (as tf2onnx writes BlazeFace).
    fn two_scale_detector(extra_head_input: Option<&str>) -> Model {
        let mut boxes8 = vec!["c1", "wh4"];
        boxes8.extend(extra_head_input);
        let nodes = vec![
            node("Conv", "a", &["x", "wa"], &["a"]),
            node("Relu", "ra", &["a"], &["a1"]),
            node("Conv", "b", &["a1", "wb"], &["b"]),
            node("Relu", "rb", &["b"], &["b1"]),
            node("Conv", "c", &["b1", "wc"], &["c"]),
            node("Relu", "rc", &["c"], &["c1"]),
            node("Conv", "h3", &["c1", "wh3"], &["h3"]),
            node("Reshape", "s8", &["h3", "shape"], &["scores_8"]),
            node("Conv", "h4", &boxes8, &["boxes_8"]),
            node("Conv", "h1", &["b1", "wh1"], &["h1"]),
            node("Reshape", "s16", &["h1", "shape"], &["scores_16"]),
            node("Conv", "h2", &["b1", "wh2"], &["boxes_16"]),
        ];
        let mut initializer: Vec<_> = ["wa", "wb", "wc", "wh1", "wh2", "wh3", "wh4"]
            .iter()
            .map(|w| float_tensor(w, &[2, 2, 1, 1], true))
            .collect();
        initializer.push(float_tensor("shape", &[2], false));
        graph_model(
            nodes,
            initializer,
            &["scores_16", "scores_8", "boxes_16", "boxes_8"],
        )
    }

    #[test]
    fn heads_are_blocks_after_the_trunk_value_they_read() {
        let blocks = two_scale_detector(None).blocks().unwrap();
        let summary: Vec<(&str, &str, Vec<&str>, bool)> = blocks
            .iter()
            .map(|b| {
                let weights = b.weights.iter().map(String::as_str).collect();
                (
                    b.input.as_str(),
                    b.output.as_str(),
                    weights,
                    b.kind == BlockKind::Head,
                )
            })
            .collect();
        // The trunk ends at scores_8 (computed from the most nodes: its Reshape); the 16x16 heads follow the block that outputs b1, boxes_8 the one of c1.
        assert_eq!(
            summary,
            vec![
                ("x", "a1", vec!["wa"], false),
                ("a1", "b1", vec!["wb"], false),
                ("b1", "scores_16", vec!["wh1"], true),
                ("b1", "boxes_16", vec!["wh2"], true),
                ("b1", "c1", vec!["wc"], false),
                ("c1", "boxes_8", vec!["wh4"], true),
                ("c1", "scores_8", vec!["wh3"], false),
            ]
        );
        assert_eq!(blocks[2].nodes, vec![9, 10]);
        let m = two_scale_detector(None);
        let head = m.extract_block(&blocks[2]).unwrap();
        assert_eq!(head.graph().unwrap().output[0].name(), "scores_16");
    }

    #[test]
    fn outputs_split_from_one_conv_are_one_head_ending_at_the_conv() {
        let mut m = two_scale_detector(None);
        let g = m.proto.graph.as_mut().unwrap();
        // h2 (boxes_16) now reads h1's output instead: scores_16 and boxes_16 share h1.
        let split = node("Split", "split", &["h1"], &["s16a"]);
        g.node[10].input[0] = "s16a".into();
        g.node.insert(10, split);
        g.node[12].op_type = Some("Relu".into());
        g.node[12].input = vec!["h1".into()];
        let blocks = m.blocks().unwrap();
        let head: Vec<_> = blocks
            .iter()
            .filter(|b| b.input == "b1" && b.kind == BlockKind::Head)
            .collect();
        assert_eq!(head.len(), 1, "{blocks:?}");
        assert_eq!(
            (head[0].output.as_str(), &head[0].weights),
            ("h1", &vec!["wh1".to_string()])
        );
        assert_eq!(head[0].nodes, vec![9]);
    }

    #[test]
    fn a_head_reading_two_trunk_values_is_refused() {
        let err = two_scale_detector(Some("a1"))
            .blocks()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the head to output boxes_8 reads 2 trunk values (a1, c1)"),
            "{err}"
        );
    }

    /// A U-Net's shape: stem, an encoder (a conv whose output `k` is both a residual
    /// shortcut and a skip into the decoder, a residual block, a pool, eight convs), an
    /// upsample, the skip concatenated back, two decoder convs. Ten weight layers between the
    /// cuts `k` and `cat`.
    fn small_unet() -> Model {
        let mut nodes = vec![
            node("Conv", "s", &["x", "ws"], &["s"]),
            node("Relu", "", &["s"], &["s1"]),
            node("Conv", "e1", &["s1", "we1"], &["e1"]),
            node("Relu", "", &["e1"], &["k"]),
            node("Conv", "r1", &["k", "wr1"], &["r1"]),
            node("Relu", "", &["r1"], &["r1r"]),
            node("Conv", "r2", &["r1r", "wr2"], &["r2"]),
            node("Add", "", &["r2", "k"], &["r"]),
            node("MaxPool", "", &["r"], &["c0r"]),
        ];
        let mut weights = vec!["ws", "we1", "wr1", "wr2"];
        let names: Vec<(String, String, String, String)> = (1..=8)
            .map(|i| {
                (
                    format!("c{}r", i - 1),
                    format!("wc{i}"),
                    format!("c{i}"),
                    format!("c{i}r"),
                )
            })
            .collect();
        for (from, w, conv, relu) in &names {
            nodes.push(node("Conv", conv, &[from, w], &[conv]));
            nodes.push(node("Relu", "", &[conv], &[relu]));
            weights.push(w);
        }
        nodes.extend([
            node("Resize", "up", &["c8r", "", "scales"], &["u"]),
            node("Concat", "cat", &["u", "k"], &["cat"]),
            node("Conv", "d1", &["cat", "wd1"], &["d1"]),
            node("Relu", "", &["d1"], &["d1r"]),
            node("Conv", "d2", &["d1r", "wd2"], &["y"]),
        ]);
        weights.extend(["wd1", "wd2"]);
        let mut initializer: Vec<_> = weights
            .iter()
            .map(|w| float_tensor(w, &[2, 2, 1, 1], true))
            .collect();
        initializer.push(float_tensor("scales", &[4], false));
        graph_model(nodes, initializer, &["y"])
    }

    #[test]
    fn a_unet_is_split_into_residual_sized_parts_and_layers_that_read_a_skip() {
        let m = small_unet();
        let blocks = m.blocks().unwrap();
        let summary: Vec<(&str, &str, Vec<&str>, BlockKind)> = blocks
            .iter()
            .map(|b| {
                let weights = b.weights.iter().map(String::as_str).collect();
                (b.input.as_str(), b.output.as_str(), weights, b.kind)
            })
            .collect();
        use BlockKind::{Part, Trunk};
        let mut expected = vec![
            ("x", "s1", vec!["ws"], Trunk),
            ("s1", "k", vec!["we1"], Trunk),
            // The residual block stays whole: the shortcut's use at its Add is within reach.
            ("k", "c0r", vec!["wr1", "wr2"], Part),
        ];
        let convs: Vec<(String, String, String)> = (1..=7)
            .map(|i| (format!("c{}r", i - 1), format!("c{i}r"), format!("wc{i}")))
            .collect();
        expected.extend(
            convs
                .iter()
                .map(|(i, o, w)| (i.as_str(), o.as_str(), vec![w.as_str()], Part)),
        );
        expected.extend([
            // The run from c7r to the Concat reads the skip k: its one layer ends at the
            // upsample, the last node only it feeds.
            ("c7r", "u", vec!["wc8"], Part),
            ("cat", "d1r", vec!["wd1"], Trunk),
            ("d1r", "y", vec!["wd2"], Trunk),
        ]);
        assert_eq!(summary, expected);
        // Every part's input and output are computed from the cut before the parts.
        for b in blocks.iter().filter(|b| b.kind == Part && b.input != "k") {
            m.span("k", &b.input).unwrap();
            m.span("k", &b.output).unwrap();
        }
        // Every weight is learned in exactly one block.
        let learned: Vec<&str> = blocks
            .iter()
            .flat_map(|b| b.weights.iter().map(String::as_str))
            .collect();
        assert_eq!(learned.len(), 14);
        assert_eq!(learned.iter().collect::<HashSet<_>>().len(), 14);
    }
}
