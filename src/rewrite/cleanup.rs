//! Removing what the fusion left dead: nodes whose outputs nobody reads, initializers nobody reads, and
//! value_info entries of tensors that no longer exist. What was already dead in the input is kept (the
//! rewriter only cleans up after itself).

use std::collections::HashSet;

use onnx_protobuf::GraphProto;

use super::graph::outer_refs;

/// Names of every tensor read by a node (subgraph captures included) or by the graph outputs.
fn read_names(g: &GraphProto) -> HashSet<String> {
    let mut r: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    for n in &g.node {
        r.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
        for a in &n.attribute {
            for sg in a.g.iter().chain(a.graphs.iter()) {
                r.extend(outer_refs(sg).into_iter().map(String::from));
            }
        }
    }
    r
}

/// Nodes (by their first output's name) and initializers not contributing to any graph output.
pub fn dead_names(g: &GraphProto) -> HashSet<String> {
    let mut live: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut live_nodes = vec![false; g.node.len()];
    loop {
        let mut changed = false;
        for (i, n) in g.node.iter().enumerate().rev() {
            if live_nodes[i] || !n.output.iter().any(|o| live.contains(o)) {
                continue;
            }
            live_nodes[i] = true;
            changed = true;
            live.extend(n.input.iter().filter(|s| !s.is_empty()).cloned());
            for a in &n.attribute {
                for sg in a.g.iter().chain(a.graphs.iter()) {
                    live.extend(outer_refs(sg).into_iter().map(String::from));
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut dead: HashSet<String> = g
        .node
        .iter()
        .enumerate()
        .filter(|(i, _)| !live_nodes[*i])
        .flat_map(|(_, n)| n.output.iter().filter(|o| !o.is_empty()).cloned())
        .collect();
    dead.extend(g.initializer.iter().filter(|t| !live.contains(&t.name)).map(|t| t.name.clone()));
    dead
}

/// Removes nodes/initializers dead now but not in `dead_before`. Returns how many nodes went.
pub fn remove_dead(g: &mut GraphProto, dead_before: &HashSet<String>) -> usize {
    let before = g.node.len();
    loop {
        let dead = dead_names(g);
        let n0 = g.node.len();
        let reads = read_names(g);
        // Remove one layer of unread dead nodes at a time (their inputs may then become unread).
        g.node.retain(|n| {
            let outs: Vec<&String> = n.output.iter().filter(|o| !o.is_empty()).collect();
            let removable = !outs.is_empty()
                && outs.iter().all(|o| dead.contains(*o) && !dead_before.contains(*o) && !reads.contains(*o));
            !removable
        });
        if g.node.len() == n0 {
            break;
        }
    }
    let reads = read_names(g);
    let inputs: HashSet<String> = g.input.iter().map(|i| i.name.clone()).collect();
    g.initializer.retain(|t| reads.contains(&t.name) || inputs.contains(&t.name) || dead_before.contains(&t.name));
    let produced: HashSet<String> = g
        .node
        .iter()
        .flat_map(|n| n.output.iter().cloned())
        .chain(g.initializer.iter().map(|t| t.name.clone()))
        .chain(g.input.iter().map(|t| t.name.clone()))
        .collect();
    g.value_info.retain(|v| produced.contains(&v.name));
    before - g.node.len()
}
