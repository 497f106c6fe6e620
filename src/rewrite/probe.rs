//! Probe sizes and input values, and the evaluators built on them. A fact the rewriter relies on
//! (a scale, a repeat factor, what a mask computes) must hold under every probe; probes differ in batch
//! and sequence sizes and in the 0/1 patterns of integer inputs, so size- or data-dependent pieces show.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use onnx_protobuf::TensorProto;

use super::eval::{Evaluator, Probe};
use super::graph::{Dim, GraphIndex};
use super::tensor::{dt, Tensor};

/// (batch, sequence) for the standard probes.
const PROBES: [(i64, i64); 2] = [(2, 5), (3, 8)];
/// The probes for an export that fixes batch 1 in places although its inputs declare the batch dynamic
/// (torch.export specializes a dynamic axis whose example size is 1): there the standard probes' batches
/// make later layers' shapes inconsistent, and nothing past the first specialized reshape is inferable.
const BATCH1_PROBES: [(i64, i64); 2] = [(1, 5), (1, 8)];
/// Largest sequence a mask probe may use (its masks hold S² elements).
pub const MAX_PROBE_SEQ: i64 = 2048;

pub struct Ctx<'g, 'a> {
    pub gi: &'g GraphIndex<'a>,
    pub evs: Vec<Evaluator<'g, 'a>>,
    ext: &'g dyn Fn(&TensorProto) -> Option<Vec<u8>>,
    big: RefCell<HashMap<i64, Rc<Evaluator<'g, 'a>>>>,
}

impl<'g, 'a> Ctx<'g, 'a> {
    pub fn new(gi: &'g GraphIndex<'a>, ext: &'g dyn Fn(&TensorProto) -> Option<Vec<u8>>) -> Self {
        let evaluators = |probes: &[(i64, i64)], first_row_full: bool, wide: &[&str]| -> Vec<Evaluator<'g, 'a>> {
            probes
                .iter()
                .enumerate()
                .map(|(k, &(b, s))| Evaluator::new(gi, make_probe(gi, b, s, k as u64 + 1, first_row_full, wide), ext))
                .collect()
        };
        let mut evs = evaluators(&PROBES, true, &[]);
        // A KV-cache export declares its [B, past + new] padding mask and its [B, new] token ids with unrelated
        // symbols, so the standard probes give both one width, and a mask that gathers from the padding mask
        // at past + new positions indexes it out of range (every output can still be inferable). There each
        // [B, S] integer input is also tried at width past + new; the probes that compute the most values win.
        let kv = has_kv_cache_inputs(gi);
        let score = |evs: &[Evaluator]| (inferable_outputs(gi, evs), if kv { computable_values(gi, evs) } else { 0 });
        let mut best = score(&evs);
        let candidates = if kv { rank2_integer_inputs(gi) } else { Vec::new() };
        let subsets = if candidates.len() <= 3 { 1usize << candidates.len() } else { 1 };
        let wide = |subset: usize| -> Vec<&str> { candidates.iter().enumerate().filter(|(k, _)| subset >> k & 1 == 1).map(|(_, n)| *n).collect() };
        for subset in 1..subsets {
            let trial = evaluators(&PROBES, true, &wide(subset));
            let n = score(&trial);
            if n > best {
                best = n;
                evs = trial;
            }
        }
        // An export that fixes batch 1 in places (BATCH1_PROBES): batch-1 probes where they infer more outputs.
        if best.0 < gi.g.output.len() {
            for subset in 0..subsets {
                let trial = evaluators(&BATCH1_PROBES, false, &wide(subset));
                let n = score(&trial);
                if n.0 > best.0 || (n > best && evs.first().is_some_and(|e| e.probe().axis_dims[0] == 1)) {
                    best = n;
                    evs = trial;
                }
            }
        }
        Ctx { gi, evs, ext, big: RefCell::default() }
    }

    /// Whether the probes run at batch 1 only (see [`BATCH1_PROBES`]).
    pub fn batch1_only(&self) -> bool {
        self.evs.iter().all(|e| e.probe().axis_dims.first() == Some(&1))
    }

    /// An evaluator with batch 1 and the given sequence size (for masks holding larger constants).
    pub fn big(&self, seq: i64) -> Rc<Evaluator<'g, 'a>> {
        self.big
            .borrow_mut()
            .entry(seq)
            .or_insert_with(|| Rc::new(Evaluator::new(self.gi, make_probe(self.gi, 1, seq, 99, true, &self.wide_inputs()), self.ext)))
            .clone()
    }

    /// The [B, S] integer inputs the chosen probes give width past + new (see [`Ctx::new`]).
    fn wide_inputs(&self) -> Vec<&'a str> {
        let Some(e) = self.evs.first() else { return Vec::new() };
        let seq = e.probe().axis_dims[1];
        rank2_integer_inputs(self.gi).into_iter().filter(|n| e.probe().values.get(*n).is_some_and(|v| v.shape.get(1) == Some(&(2 * seq as usize)))).collect()
    }

    /// A scalar that has the same value under every probe.
    pub fn const_scalar(&self, t: &str) -> Option<f64> {
        let mut v = None;
        for e in &self.evs {
            let x = e.value(t)?;
            if x.numel() != 1 {
                return None;
            }
            let x = x.data[0];
            match v {
                None => v = Some(x),
                Some(p) if p == x || (p.is_nan() && x.is_nan()) => {}
                _ => return None,
            }
        }
        v
    }

    /// Shapes of `t` under every probe.
    pub fn shapes(&self, t: &str) -> Option<Vec<Vec<i64>>> {
        self.evs.iter().map(|e| e.shape(t)).collect()
    }

    /// The rank of `t`, if every probe agrees.
    pub fn rank(&self, t: &str) -> Option<usize> {
        let s = self.shapes(t)?;
        let r = s[0].len();
        s.iter().all(|x| x.len() == r).then_some(r)
    }
}

/// How many graph outputs have a shape under every evaluator.
fn inferable_outputs(gi: &GraphIndex, evs: &[Evaluator]) -> usize {
    gi.g.output.iter().filter(|o| evs.iter().all(|e| e.shape(&o.name).is_some())).count()
}

/// Whether the graph takes a past KV cache: a float input of rank 4 whose sequence axis (2) is symbolic.
pub fn has_kv_cache_inputs(gi: &GraphIndex) -> bool {
    gi.g.input.iter().filter(|v| !gi.inits.contains_key(v.name.as_str())).any(|v| {
        gi.elem_type(&v.name).is_some_and(dt::is_float) && gi.declared_shape(&v.name).is_some_and(|d| d.len() == 4 && !matches!(d[2], Dim::Known(_)))
    })
}

/// How many values computed from the [B, S] integer inputs (the mask chains; nothing else depends on their
/// widths) have a value under every evaluator. Only those are evaluated: a weight reached from elsewhere
/// could be large.
fn computable_values(gi: &GraphIndex, evs: &[Evaluator]) -> usize {
    let mut reached: std::collections::HashSet<&str> = rank2_integer_inputs(gi).into_iter().collect();
    let mut count = 0;
    for n in &gi.g.node {  // topological order (ONNX requires it)
        if !n.input.iter().any(|i| reached.contains(i.as_str())) {
            continue;
        }
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            reached.insert(o.as_str());
            count += evs.iter().all(|e| e.value(o).is_some()) as usize;
        }
    }
    count
}

/// Integer graph inputs of shape [B, S] with a symbolic S (token ids, padding masks).
fn rank2_integer_inputs<'a>(gi: &GraphIndex<'a>) -> Vec<&'a str> {
    gi.g
        .input
        .iter()
        .filter(|v| !gi.inits.contains_key(v.name.as_str()))
        .filter(|v| gi.elem_type(&v.name).is_some_and(|et| !dt::is_float(et)))
        .filter(|v| gi.declared_shape(&v.name).is_some_and(|d| d.len() == 2 && !matches!(d[1], Dim::Known(_))))
        .map(|v| v.name.as_str())
        .collect()
}

/// A small deterministic generator (the probes must be reproducible).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `first_row_full`: row 0 of a [B, S] integer input attends everywhere (the others are random); false
/// makes every row random, for batch-1 probes that would otherwise see no padding at all. The `wide`
/// [B, S] inputs get S = past + new (twice the sequence: a past cache's axes get the sequence size too).
fn make_probe(gi: &GraphIndex, batch: i64, seq: i64, seed: u64, first_row_full: bool, wide: &[&str]) -> Probe {
    let axis_dims = vec![batch, seq, seq, seq, seq, seq];
    let mut values = HashMap::new();
    let mut rng = Lcg(seed.wrapping_mul(0x9E3779B97F4A7C15));
    for v in &gi.g.input {
        if gi.inits.contains_key(v.name.as_str()) {
            continue;
        }
        let Some(et) = gi.elem_type(&v.name) else { continue };
        if dt::is_float(et) {
            continue;
        }
        let Some(decl) = gi.declared_shape(&v.name) else { continue };
        let shape: Vec<usize> = decl
            .iter()
            .enumerate()
            .map(|(k, d)| match d {
                Dim::Known(x) => *x as usize,
                _ if k == 1 && wide.contains(&v.name.as_str()) => 2 * seq as usize,
                _ => axis_dims.get(k).copied().unwrap_or(3) as usize,
            })
            .collect();
        let n: usize = shape.iter().product();
        if n > 1 << 22 {
            continue;
        }
        let data: Vec<f64> = match shape.len() {
            // [B, S]: a 0/1 pattern; the first row attends everywhere (if first_row_full), others are random
            // (holes, left and right padding, fully masked rows all occur).
            2 => (0..n)
                .map(|i| if first_row_full && i < shape[1] { 1.0 } else { !rng.next().is_multiple_of(3) as i32 as f64 })
                .collect(),
            // [B]: lengths in [1, S].
            1 => (0..n).map(|_| 1.0 + (rng.next() % seq as u64) as f64).collect(),
            _ => (0..n).map(|_| (rng.next() % 2) as f64).collect(),
        };
        values.insert(v.name.clone(), Tensor::new(et, shape, data).normalize());
    }
    Probe { axis_dims, values }
}
