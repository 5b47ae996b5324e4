//! Structural checks of a model before any work: an opset this build knows, and a main graph
//! in which every value has exactly one producer that comes before its readers.

use std::collections::HashMap;

use crate::{Model, OnnxError, Result};

/// The newest default-domain opset this build reads: that of ONNX 1.19, the release the
/// project's Python checks pin. The opsets after 13 change the operators subsetq implements
/// only by admitting new element types, which the readers refuse by name; a newer opset may
/// change their meaning, so it is refused rather than guessed at.
pub const MAX_OPSET: i64 = 24;

/// Who defines a value of the main graph.
#[derive(Clone, Copy)]
enum Producer {
    Initializer,
    Input,
    /// A node, by its index in graph order.
    Node(usize),
}

impl Model {
    /// Checks, without reading any tensor data, that the model imports a default-domain opset
    /// no newer than [`MAX_OPSET`] and that its main graph is well formed: initializer and
    /// graph input names are not repeated (an input may repeat an initializer, as in IR < 4),
    /// no value is produced twice, every node input is an initializer, a graph input or the
    /// output of an earlier node (which rules out cycles), and every graph output is produced.
    /// Errors name the node or value. Values of subgraphs (`If`, `Loop` bodies) are not checked.
    pub fn validate(&self) -> Result<()> {
        if let Some(v) = self.opset().filter(|&v| v > MAX_OPSET) {
            return Err(OnnxError::Graph(format!(
                "opset {v} is newer than {MAX_OPSET}, the newest this build reads (re-export \
                 the model at opset {MAX_OPSET} or lower)"
            )));
        }
        let graph = self.graph()?;
        let graph_err = |msg: String| Err(OnnxError::Graph(msg));
        let mut producer: HashMap<&str, Producer> = HashMap::new();
        for t in &graph.initializer {
            if producer.insert(t.name(), Producer::Initializer).is_some() {
                return graph_err(format!("initializer {} is defined twice", t.name()));
            }
        }
        for i in &graph.input {
            match producer.get(i.name()) {
                None => {
                    producer.insert(i.name(), Producer::Input);
                }
                Some(Producer::Initializer) => {}
                Some(_) => return graph_err(format!("graph input {} is declared twice", i.name())),
            }
        }
        // Every output, with its node, so that a value read too early can say who makes it.
        let mut made_by: HashMap<&str, usize> = HashMap::new();
        for (k, n) in graph.node.iter().enumerate() {
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                made_by.entry(o.as_str()).or_insert(k);
            }
        }
        let name = |k: usize| {
            let n = &graph.node[k];
            match n.name() {
                "" => format!("{}#{k}", n.op_type()),
                s => s.to_string(),
            }
        };
        for (k, n) in graph.node.iter().enumerate() {
            let node_err = |msg: String| {
                Err(OnnxError::Node {
                    node: name(k),
                    op_type: n.op_type().to_string(),
                    msg,
                })
            };
            for i in n.input.iter().filter(|i| !i.is_empty()) {
                if producer.contains_key(i.as_str()) {
                    continue;
                }
                return match made_by.get(i.as_str()) {
                    Some(&later) => node_err(format!(
                        "input {i} is produced by node {}, which comes later (a cycle, or \
                         nodes out of topological order)",
                        name(later)
                    )),
                    None => node_err(format!(
                        "input {i} is not produced by any node, initializer or graph input"
                    )),
                };
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(&first) = producer.get(o.as_str()) {
                    let by = match first {
                        Producer::Initializer => "an initializer".to_string(),
                        Producer::Input => "a graph input".to_string(),
                        Producer::Node(j) => format!("node {}", name(j)),
                    };
                    return node_err(format!("output {o} is already produced by {by}"));
                }
                producer.insert(o.as_str(), Producer::Node(k));
            }
        }
        for o in &graph.output {
            if !producer.contains_key(o.name()) {
                return graph_err(format!(
                    "graph output {} is not produced by any node, initializer or graph input",
                    o.name()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use crate::testutil::conv_relu_gemm;

    fn with_graph(edit: impl FnOnce(&mut pb::GraphProto)) -> Model {
        let mut proto = conv_relu_gemm(1);
        if let Some(g) = proto.graph.as_mut() {
            edit(g);
        }
        Model::from_proto(proto)
    }

    fn refusal(model: &Model) -> String {
        match model.validate() {
            Err(e) => e.to_string(),
            Ok(()) => panic!("accepted"),
        }
    }

    #[test]
    fn a_well_formed_model_passes() {
        with_graph(|_| {}).validate().unwrap();
    }

    #[test]
    fn opsets_newer_than_known_are_refused() {
        let mut model = with_graph(|_| {});
        model.set_opset(MAX_OPSET);
        model.validate().unwrap();
        model.set_opset(MAX_OPSET + 1);
        assert!(refusal(&model).contains("opset 25 is newer than 24"));
    }

    #[test]
    fn ill_formed_graphs_name_the_value() {
        let nodes = with_graph(|_| {}).proto.graph.unwrap().node;
        let outputs: Vec<String> = nodes.iter().map(|n| n.output[0].clone()).collect();
        // The last two nodes swapped: the Gemm reads a value made after it.
        let swapped = with_graph(|g| g.node.swap(1, 2));
        let m = refusal(&swapped);
        assert!(
            m.contains(&format!("input {} is produced by node", outputs[1])),
            "{m}"
        );
        // A node reading a value nobody makes.
        let dangling = with_graph(|g| g.node[1].input[0] = "ghost".into());
        assert!(refusal(&dangling).contains("input ghost is not produced"));
        // Two nodes writing one value.
        let twice = with_graph(|g| g.node[1].output[0] = outputs[0].clone());
        let m = refusal(&twice);
        assert!(
            m.contains(&format!(
                "output {} is already produced by node",
                outputs[0]
            )),
            "{m}"
        );
        // An initializer defined twice.
        let dup = with_graph(|g| {
            let t = g.initializer[0].clone();
            g.initializer.push(t);
        });
        assert!(refusal(&dup).contains("is defined twice"));
        // A graph output nobody makes.
        let lost = with_graph(|g| {
            g.output.push(pb::ValueInfoProto {
                name: Some("nowhere".into()),
                ..Default::default()
            })
        });
        assert!(refusal(&lost).contains("graph output nowhere"));
    }
}
